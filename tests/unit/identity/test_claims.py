"""Claims (gatehouse.identity.claims): claim paths, the identity a token's claims map to, required claims."""

from __future__ import annotations

from gatehouse.identity.claims import claim_at
from support.idp_server import IdP
from support.tokens import claims_for, refused, sign, verifier_for


def test_claim_at_paths() -> None:
    c = {"a.b": 1, "a": {"b": 2, "c.d": {"e": 3}}, "x": [1]}
    assert claim_at(c, "a.b") == 1
    assert claim_at(c, ("a", "b")) == 2
    assert claim_at(c, "a.c.d.e") == 3
    assert claim_at(c, "x.y") is None and claim_at(c, "nope") is None


def test_claims_mapping(idp: IdP) -> None:
    claims = claims_for(
        idp.issuer,
        sub=None,
        groups=None,
        email=None,
        uid="u-42",
        mail="bob@example.com",
        display="Bob",
        **{
            "https://example.com/groups": ["sre", "dev"],
            "https://example.com/claims": {"teams": ["payments"]},
            "realm_access": {"roles": ["admin"]},
        },
    )
    token = sign(claims)
    for groups_claim, expected in [
        ("https://example.com/groups", ("sre", "dev", "ci")),
        ("https://example.com/claims.teams", ("payments", "ci")),
        ("realm_access.roles", ("admin", "ci")),
        (["realm_access", "roles"], ("admin", "ci")),
        ("missing.path", ("ci",)),
    ]:
        v = verifier_for(
            idp,
            subject_claim="uid",
            email_claim="mail",
            name_claim="display",
            groups_claim=groups_claim,
            static_groups=["ci"],
        )
        ident = v.verify(token)
        assert (ident.subject, ident.email, ident.name) == ("u-42", "bob@example.com", "Bob")
        assert ident.groups == expected, groups_claim


def test_required_claims(idp: IdP) -> None:
    v = verifier_for(
        idp,
        required_claims={
            "repository_owner": "acme",
            "ref": ["refs/heads/main", "refs/tags/v1"],
            "runner_environment": "github-hosted",
        },
    )
    ok = claims_for(idp.issuer, repository_owner="acme", ref="refs/tags/v1", runner_environment="github-hosted")
    assert v.verify(sign(ok)).subject == "alice"
    err = refused(v, sign({**ok, "repository_owner": "evil"}))
    assert err.check == "claims" and "'repository_owner'" in err.message and '"acme"' in err.message
    err = refused(v, sign({k: x for k, x in ok.items() if k != "ref"}))
    assert err.check == "claims" and "no 'ref' claim" in err.message
    # A list claim must contain the value; types are not coerced.
    v2 = verifier_for(idp, required_claims={"groups": "developers", "level": 2, "admin": True})
    assert v2.verify(sign(claims_for(idp.issuer, level=2, admin=True))).subject == "alice"
    assert refused(v2, sign(claims_for(idp.issuer, level="2", admin=True))).check == "claims"
    assert refused(v2, sign(claims_for(idp.issuer, level=2, admin=1))).check == "claims"
