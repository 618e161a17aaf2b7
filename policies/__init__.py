"""Policy files shipped with Gatehouse (`gatehouse.policies`): the quick-start and reference policies, rule packs."""
