"""Policy files shipped with Gatehouse: the quick-start and reference policies, rule packs."""
