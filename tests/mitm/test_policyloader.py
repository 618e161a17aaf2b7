"""The PolicyLoader addon (gatehouse.mitm.policyloader) through mitmproxy's option machinery
(taddons): what a policy puts on the shared state, the options it forces or refuses, the
feature addons it configures, and the OptionsError that stops start-up on a bad policy."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.layers.http import HttpConnectHook, HttpRequestHeadersHook, HttpRequestHook
from mitmproxy.test import taddons

import gatehouse
from gatehouse.masking.fingerprints import FINGERPRINT_KEY_FILE, FingerprintKeyError
from gatehouse.mitm.identity import IdentityAddon
from gatehouse.mitm.masking import Masking
from gatehouse.mitm.policyloader import BODY_LIMIT_MARGIN, PolicyLoader
from gatehouse.mitm.recorder import Recorder
from gatehouse.mitm.state import GatewayState
from gatehouse.policy.gateway import DEFAULT_MAX_BODY_BYTES
from gatehouse.policy.loader import load_policy
from gatehouse.recording.registry import Recording
from support.flows import ISSUER, api_flow, connect_flow, fire
from support.harness import GATEWAY_KEY, write_policy
from support.secrets import fake_secret

SECRET = fake_secret("aws-access-key-id", random.Random(42))
NO_STREAMING = (
    r"^Gatehouse inspects every API body: mitmproxy's stream_large_bodies must not be set "
    r"\(bodies over \[gateway\] max_body_bytes are refused instead\)$"
)
NO_KEY_WARNING = (
    "gatehouse: the gateway has no Claude API key: environment variable {} is not set; "
    "API requests get an api_error until it is configured"
)


@dataclass
class Stack:
    """PolicyLoader and the feature addons it configures, as addons/gateway.py builds them, in a
    master that has mitmproxy's Proxyserver (it defines connection_strategy, body_size_limit and
    stream_large_bodies, with mitmdump's defaults)."""

    tctx: taddons.context
    state: GatewayState
    identity: IdentityAddon
    masking: Masking
    recorder: Recorder
    loader: PolicyLoader
    directory: Path

    def start(self, policy: str | None = "", **options: str) -> Path | None:
        """mitmdump's start-up with `--set gateway_policy=FILE` (`policy` written there; None: no
        such --set) and `--set NAME=VALUE` for each of `options`. The values wait until the
        script's addons define their options, then the script's addons see every option."""
        path = None if policy is None else write_policy(self.directory, policy)
        sets = {"gateway_policy": str(path)} if path else {}
        sets.update(options)
        self.tctx.options.set(*(f"{name}={value}" for name, value in sets.items()), defer=True)
        self.tctx.master.addons.add(self.loader)
        self.tctx.master.addons.invoke_addon_sync(self.loader, hooks.ConfigureHook(set(self.tctx.options.keys())))
        return path

    def reload(self, policy: str) -> None:
        """A changed policy file, set again on the running gateway."""
        self.tctx.configure(self.loader, gateway_policy=str(write_policy(self.directory, policy)))


@pytest.fixture(autouse=True)
def gateway_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", GATEWAY_KEY)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    state, identity, masking, recorder = GatewayState(), IdentityAddon(), Masking(), Recorder()
    loader = PolicyLoader(state, identity=identity, masking=masking, recorder=recorder)
    try:
        with taddons.context(Proxyserver()) as tctx:
            yield Stack(tctx, state, identity, masking, recorder, loader, tmp_path)
    finally:
        recorder.done()
        if recorder.recording is not None:
            Recording.forget(recorder.recording.spool.root)


# -- the state ---------------------------------------------------------------------------------


def test_the_policy_and_the_api_as_upstream_go_on_the_state(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = stack.start()
    assert stack.state.policy is not None and stack.state.policy.path == path
    assert stack.state.upstream == urlsplit("https://api.anthropic.com")
    sha = stack.state.policy.sha256
    assert f"gatehouse: policy {path} loaded (sha256 {sha[:12]}), upstream https://api.anthropic.com" in caplog.text


def test_the_policys_upstream_replaces_the_api(stack: Stack) -> None:
    stack.start('[gateway]\nupstream = "https://proxy.example.com/base/"\n')
    assert stack.state.upstream == urlsplit("https://proxy.example.com/base")


def test_the_gateway_upstream_option_wins_over_the_policy(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stack.start('[gateway]\nupstream = "https://proxy.example.com/base"\n', gateway_upstream="http://127.0.0.1:8443/")
    assert stack.state.upstream == urlsplit("http://127.0.0.1:8443")
    assert "upstream http://127.0.0.1:8443" in caplog.text and "proxy.example.com" not in caplog.text


@pytest.mark.parametrize(
    "value, why",
    [
        ("ftp://upstream.example", "must be an http:// or https:// base URL; got 'ftp://upstream.example'"),
        ("upstream.example:443", "must be an http:// or https:// base URL; got 'upstream.example:443'"),
        ("https://upstream.example/?x=1", "must not have a query or fragment"),
    ],
)
def test_a_bad_gateway_upstream_option_stops_start_up(stack: Stack, value: str, why: str) -> None:
    with pytest.raises(exceptions.OptionsError) as refused:
        stack.start(gateway_upstream=value)
    assert str(refused.value) == f"--set gateway_upstream: gateway_upstream: {why}"
    assert stack.state.policy is None


# -- a bad policy stops start-up ------------------------------------------------------------------


def test_no_policy_stops_start_up(stack: Stack) -> None:
    with pytest.raises(
        exceptions.OptionsError, match=r"^Gatehouse needs a policy: --set gateway_policy=policies/quickstart.toml$"
    ):
        stack.start(None)
    assert stack.state.policy is None


def test_a_policy_file_that_cannot_be_read_is_named(stack: Stack, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(exceptions.OptionsError) as refused:
        stack.start(None, gateway_policy=str(missing))
    assert str(refused.value) == f"{missing}: cannot read policy file: No such file or directory"
    assert stack.state.policy is None


@pytest.mark.parametrize(
    "policy, key, why",
    [
        ('[gateway]\nmax_body_bytes = "big"\n', "gateway.max_body_bytes", "expected an integer, got a string"),
        ('[gateway]\nupstream = "ftp://x"\n', "gateway.upstream", "must be an http:// or https:// base URL"),
        ("[wat]\n", "wat", "unknown key"),
    ],
)
def test_an_invalid_policy_is_refused_naming_file_and_key(stack: Stack, policy: str, key: str, why: str) -> None:
    with pytest.raises(exceptions.OptionsError) as refused:
        stack.start(policy)
    assert str(refused.value).startswith(f"{stack.directory / 'policy.toml'}: {key}: ")
    assert why in str(refused.value)
    assert stack.state.policy is None and stack.masking.masker is None


def test_a_missing_fingerprint_secret_stops_start_up(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GH_TEST_FP_MISSING", raising=False)
    with pytest.raises(exceptions.OptionsError, match="GH_TEST_FP_MISSING"):
        stack.start('[masking]\nfingerprint_secret_env = "GH_TEST_FP_MISSING"\n')
    assert stack.state.policy is None


def test_apply_refuses_a_policy_without_the_named_fingerprint_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GH_TEST_FP_MISSING", raising=False)
    p = tmp_path / "policy.toml"
    p.write_text('[gateway]\nstate_dir = "state"\n[masking]\nfingerprint_secret_env = "GH_TEST_FP_MISSING"\n')
    loader = PolicyLoader(GatewayState(), identity=IdentityAddon(), masking=Masking(), recorder=Recorder())
    # configure turns this into the OptionsError that stops start-up (the test above).
    with pytest.raises(FingerprintKeyError, match="GH_TEST_FP_MISSING"):
        loader.apply(load_policy(p))


# -- mitmproxy's options ------------------------------------------------------------------------


def test_connections_upstream_are_made_lazily(stack: Stack) -> None:
    assert stack.tctx.options.connection_strategy == "eager"  # mitmdump's default
    stack.start()
    assert stack.tctx.options.connection_strategy == "lazy"


@pytest.mark.parametrize(
    "policy, max_body_bytes",
    [("", DEFAULT_MAX_BODY_BYTES), ("[gateway]\nmax_body_bytes = 2048\n", 2048)],
)
def test_the_body_size_limit_is_max_body_bytes_and_a_margin(stack: Stack, policy: str, max_body_bytes: int) -> None:
    assert stack.tctx.options.body_size_limit is None
    stack.start(policy)
    assert BODY_LIMIT_MARGIN == 1024 * 1024
    assert stack.tctx.options.body_size_limit == str(max_body_bytes + BODY_LIMIT_MARGIN)


def test_stream_large_bodies_is_refused(stack: Stack) -> None:
    with pytest.raises(exceptions.OptionsError, match=NO_STREAMING):
        stack.start(stream_large_bodies="1m")
    assert stack.state.policy is None


def test_stream_large_bodies_set_on_a_running_gateway_is_refused(stack: Stack) -> None:
    stack.start()
    with pytest.raises(exceptions.OptionsError, match=NO_STREAMING):
        stack.tctx.configure(stack.loader, stream_large_bodies="1m")
    assert stack.tctx.options.stream_large_bodies is None


# -- the API key ---------------------------------------------------------------------------------


def test_a_missing_api_key_is_a_warning_not_an_error(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("GH_TEST_SRE_KEY", raising=False)
    caplog.set_level(logging.WARNING)
    stack.start(ISSUER + '[groups.sre]\n[credentials.groups.sre]\napi_key_env = "GH_TEST_SRE_KEY"\n')
    assert stack.state.policy is not None  # start-up goes on: the key may be provided later
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [NO_KEY_WARNING.format("ANTHROPIC_API_KEY"), NO_KEY_WARNING.format("GH_TEST_SRE_KEY")]


def test_no_warning_when_the_key_is_there(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    stack.start()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- the feature addons --------------------------------------------------------------------------


def test_identity_is_required_once_the_policy_names_issuers(stack: Stack) -> None:
    overridden = '[gateway]\nupstream = "https://proxy.example.com"\npassthrough_hosts = ["*.sentry.io"]\n'
    stack.start(overridden)
    anyone = api_flow()
    fire(stack.tctx, stack.identity, HttpRequestHeadersHook(anyone))
    assert anyone.response is None
    stack.reload(ISSUER + overridden)
    tokenless = api_flow()
    fire(stack.tctx, stack.identity, HttpRequestHeadersHook(tokenless))
    assert tokenless.response is not None and tokenless.response.status_code == 401
    # Clients CONNECT to the API host even when the upstream is overridden: its tunnel opens
    # without credentials (the requests inside need a token); other hosts need them up front.
    api, sentry, other = connect_flow(), connect_flow("o1.ingest.sentry.io"), connect_flow("example.org")
    fire(stack.tctx, stack.identity, HttpConnectHook(api), HttpConnectHook(sentry), HttpConnectHook(other))
    assert api.response is None
    assert sentry.response is not None and sentry.response.status_code == 407
    assert "passthrough host o1.ingest.sentry.io" in sentry.response.text
    assert other.response is not None and other.response.status_code == 407
    assert "passthrough" not in other.response.text


def test_the_masker_is_built_with_a_key_in_the_state_dir(stack: Stack) -> None:
    stack.start('[gateway]\nstate_dir = "state"\n[masking]\nhold_back_chars = 128\n')
    addon = stack.masking
    assert addon.masker is not None and addon.policy.hold_back_chars == 128
    assert stack.state.masker is addon.masker  # log lines are masked with the same masker
    assert (stack.directory / "state" / FINGERPRINT_KEY_FILE).stat().st_mode & 0o777 == 0o600
    f = api_flow(
        body={"model": "m", "messages": [{"role": "user", "content": f"deploy with {SECRET}"}]},
    )
    fire(stack.tctx, addon, HttpRequestHook(f))
    assert SECRET not in f.request.text


def test_the_recorder_records_with_the_policys_hash_and_masker(stack: Stack) -> None:
    stack.start()
    policy, recorder = stack.state.policy, stack.recorder
    assert policy is not None and policy.recording is not None and recorder.recording is not None
    assert recorder.policy == policy.recording
    assert recorder.masker is stack.state.masker is not None
    assert (recorder.policy_sha256, recorder.gateway_version) == (policy.sha256, gatehouse.__version__)
    assert recorder.recording.spool.root == policy.recording.spool_path(policy.gateway.state_dir)
