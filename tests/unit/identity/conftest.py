"""The identity tests' IdP: a real discovery + JWKS server on 127.0.0.1 serving keys a, ec and ed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.idp_server import IdP, jwks_of
from support.tokens import EC_A, ED_A, RSA_A


@pytest.fixture
def idp() -> Iterator[IdP]:
    server = IdP(jwks_of((RSA_A, "a"), (EC_A, "ec"), (ED_A, "ed")))
    yield server
    server.down()
