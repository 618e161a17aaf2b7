"""Shared fixtures: a fake Anthropic upstream and real mitmdump gateways in front of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.fake_upstream import FakeUpstream
from support.harness import ApiStandin, Gateway, write_policy
from support.s3_server import CREDENTIALS, S3Server


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A fake Anthropic API over TLS with its own CA (the gateway trusts it explicitly)."""
    with FakeUpstream(tls=True) as up:
        yield up


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reaches_api_standin: the test expects bytes to reach the "
        "api.anthropic.com stand-in (otherwise any byte fails the test)",
    )


@pytest.fixture
def api_standin() -> Iterator[ApiStandin]:
    """Where api.anthropic.com resolves inside the gateway processes of a test: a loopback
    server that records every byte it gets. The real API is never resolved nor contacted."""
    with ApiStandin() as standin:
        yield standin


@pytest.fixture
def gateway_factory(
    request: pytest.FixtureRequest, tmp_path: Path, upstream: FakeUpstream, api_standin: ApiStandin
) -> Iterator[Callable[..., Gateway]]:
    """Start gateways on a policy text; all are stopped at the end of the test.

    Every gateway runs with tests/support/standin/sitecustomize.py: api.anthropic.com is the
    `api_standin`, and nothing it receives goes unnoticed: a test whose gateways sent it a
    byte fails at teardown (unless marked `reaches_api_standin`).
    """
    started: list[Gateway] = []

    def start(
        policy: str = "",
        *,
        name: str = "policy.toml",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        upstream_url: str | None = None,
        script: Path | None = None,
        start: bool = True,
    ) -> Gateway:
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gw = Gateway(
            policy_path=write_policy(workdir, policy, name),
            workdir=workdir,
            upstream=upstream_url or upstream.base_url,
            upstream_ca=upstream.ca_cert_path,
            env=env or {},
            extra_args=extra_args or [],
            api_standin=api_standin.address,
            **({"script": script} if script else {}),
        )
        started.append(gw)
        return gw.start() if start else gw

    yield start
    for gw in started:
        gw.stop()
    if (api_standin.received or api_standin.connections) and request.node.get_closest_marker(
        "reaches_api_standin"
    ) is None:
        pytest.fail(
            f"the gateway connected {api_standin.connections} time(s) and sent {len(api_standin.received)} "
            f"bytes towards api.anthropic.com (its loopback stand-in) although the test's upstream is "
            f"{upstream.base_url}",
            pytrace=False,
        )


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    """A gateway on a minimal policy (no identity), in front of the fake upstream."""
    return gateway_factory("")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """A real S3 endpoint (the moto server) on loopback, with its test credentials in the
    environment and no other AWS configuration leaking in from the machine."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in CREDENTIALS.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(k, raising=False)
        with S3Server() as server:
            yield server
