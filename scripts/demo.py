"""`make demo`: a scripted agent session through a real gateway, then the report of it.

Starts the fake Anthropic API (tests/support/fake_upstream/) and a real `mitmdump` with the Gatehouse
stack (tests/support/harness.py) on loopback, drives a multi-turn agent session through it with the
`anthropic` SDK, with the session header Claude Code sends, and writes `gatehouse report` of the
recording store into --out. Nothing leaves the machine.

The session: Alice asks for a deploy and pastes an AWS key (masked on the wire and in the
record); the model runs tools (`Bash`, `Read`) whose results come back in the next request,
one of them printing a secret; one answer is streamed. Then the gateway's other decisions: a
model Alice's group may not use (403), an endpoint nobody may use (403), a token for another
audience (401, an audit event without a session), and a second user (Bob, group sre).

    python scripts/demo.py [--out report/demo] [--workdir DIR] [--screenshot docs/img/report-demo.png]

Prints where the report is; with --screenshot, headless Chromium takes a picture of the session.
Runs from a checkout only (it needs tests/support); the wheel carries it as gatehouse.cli.demo
because setuptools cannot leave one module of a package out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

SESSION_ID = "5e55a0de-0000-4000-8000-00000000demo"
# Shaped like credentials the built-in rules know; not real ones.
AWS_KEY = "AKIAZ3MXQ7RT5WB2LK4P"
GITHUB_TOKEN = "ghp_" + "x7Kq2Lm9Np4Rs8Tv1Wy3Za6Bc0De5Fg2Hj7Kl"
MODEL = "claude-sonnet-4-5"

SYSTEM = (
    "You are a coding agent working in the user's repository. Use the tools to inspect and change "
    "the code; explain what you do."
)
TOOLS = [
    {
        "name": "Bash",
        "description": "Run a shell command in the repository.",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
            "required": ["command"],
        },
    },
    {
        "name": "Read",
        "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
    },
]

# What the scripted tools "print" (the demo does not run commands).
TOOL_OUTPUT = {
    "pytest -q": "............................................\n44 passed in 2.31s",
    "deploy/.env": f"SERVICE=api\nREGION=eu-west-1\nGITHUB_TOKEN={GITHUB_TOKEN}\n",
    "git log --oneline -3": "9f1c2ab Bump api to 2.4.1\n77de001 Fix retry budget\n1a2b3c4 Add canary stage",
}


def policy_text(workdir: Path, jwks: Path) -> str:
    return f"""
        [gateway]
        state_dir = "{workdir / "state"}"
        other_hosts = "deny"

        [credentials]
        api_key_env = "ANTHROPIC_API_KEY"

        [[issuers]]
        name = "dev"
        issuer = "gatehouse-dev"
        audience = "gatehouse"
        algorithms = ["EdDSA"]
        jwks_file = "{jwks}"

        [groups.developers]
        models = ["claude-sonnet-*", "claude-haiku-*"]

        [groups.sre]
        models = ["claude-*"]

        [recording]
        store = "{workdir / "recordings"}"
        spool_dir = "{workdir / "spool"}"
        checkpoint_interval_seconds = 1
        """


def scripted_upstream(request: Any) -> Any:
    """The model's side of the session, chosen by how far the conversation has gone."""
    from support.fake_upstream import Reply, text_reply_for

    if not request.is_messages:
        return None
    body = request.json_or_none() or {}
    messages = body.get("messages") or []
    if not body.get("tools"):
        return text_reply_for(request, "Deploys go through the canary stage first, then all regions.")
    step = sum(1 for m in messages if m.get("role") == "assistant")
    if step == 0:
        return Reply.message(
            [
                {"type": "thinking", "thinking": "Run the tests before anything is deployed.", "signature": "c2ln"},
                {"type": "text", "text": "I'll run the test suite first. (I won't repeat the key you pasted.)"},
                {
                    "type": "tool_use",
                    "id": "toolu_demo_tests",
                    "name": "Bash",
                    "input": {"command": "pytest -q", "description": "Run the tests"},
                },
            ]
        )
    if step == 1:
        return Reply.tool_use(
            "Read",
            {"file_path": "deploy/.env"},
            id="toolu_demo_env",
            text="Tests pass. Let me check the deploy configuration.",
        )
    if step == 2:
        return Reply.tool_use(
            "Bash",
            {"command": "git log --oneline -3"},
            id="toolu_demo_log",
            text=f"The config holds a GitHub token ({GITHUB_TOKEN}); it should move to the "
            "secret store. Checking what would ship:",
        )
    return Reply.text(
        "Ready to deploy 9f1c2ab: tests pass, config reviewed. Move GITHUB_TOKEN out of "
        "deploy/.env before the next release."
    )


def run_agent(client: Any, prompt: str, *, stream_turn: int = 2) -> list[str]:
    """The agent loop: send, run the tool calls (scripted outputs), send the results back."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    said: list[str] = []
    for turn in range(8):
        kwargs = dict(
            model=MODEL,
            max_tokens=2048,
            system=SYSTEM,
            tools=TOOLS,
            messages=messages,
            metadata={"user_id": json.dumps({"device_id": "demo", "session_id": SESSION_ID})},
        )
        if turn == stream_turn:
            with client.messages.stream(**kwargs) as s:
                msg = s.get_final_message()
        else:
            msg = client.messages.create(**kwargs)
        content = [b.model_dump(exclude_none=True) for b in msg.content]
        messages.append({"role": "assistant", "content": content})
        said += [b.text for b in msg.content if b.type == "text"]
        calls = [b for b in msg.content if b.type == "tool_use"]
        if not calls:
            return said
        results = []
        for call in calls:
            key = call.input.get("command") or call.input.get("file_path")
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": TOOL_OUTPUT.get(key, f"(no output for {key})"),
                }
            )
        messages.append({"role": "user", "content": results})
    return said


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "report" / "demo", help="report folder (default report/demo)")
    ap.add_argument("--workdir", type=Path, help="keep the gateway's files here (default: a temporary folder)")
    ap.add_argument("--screenshot", type=Path, help="also save a PNG of the session page (needs chromium)")
    ap.add_argument(
        "--gateway-script", type=Path, help="a mitmdump script other than addons/gateway.py (a stack under development)"
    )
    args = ap.parse_args(argv)
    # The fake API and the harness are test helpers (tests/support), not part of the package: put
    # them on the path here, not at import, so that importing the wheel's copy of this module
    # (gatehouse.cli.demo) changes nothing.
    sys.path.insert(0, str(REPO / "tests"))

    import warnings

    import anthropic

    # The SDK warns about model names on its deprecation list; the fake API does not care.
    warnings.filterwarnings("ignore", message="The model .* is deprecated")

    import support.harness as harness
    from gatehouse.cli.main import main as gatehouse
    from gatehouse.identity import devissuer
    from support.fake_upstream import FakeUpstream
    from support.harness import Gateway, sdk_client, write_policy

    if args.gateway_script is not None:
        harness.GATEWAY_SCRIPT = args.gateway_script.resolve()
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gatehouse-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "state"
    jwks = workdir / "dev-issuer.jwks.json"
    devissuer.ensure_dev_issuer(state, jwks)
    alice = devissuer.mint_token(
        state, subject="alice", groups=["developers"], email="alice@example.com", name="Alice Liddell"
    )
    bob = devissuer.mint_token(state, subject="bob", groups=["sre"], email="bob@example.com", name="Bob Builder")
    wrong = devissuer.mint_token(state, subject="mallory", groups=["sre"], audience="another-service")

    gw = Gateway(policy_path=write_policy(workdir, policy_text(workdir, jwks)), workdir=workdir)
    with FakeUpstream(tls=True, responder=scripted_upstream) as up:
        gw.upstream, gw.upstream_ca = up.base_url, up.ca_cert_path
        gw.start()
        print(f"gateway on 127.0.0.1:{gw.port}, fake API at {up.base_url}; driving the session...", file=sys.stderr)
        try:
            headers = {"x-claude-code-session-id": SESSION_ID}
            client = sdk_client(gw, alice, default_headers=headers)
            said = run_agent(client, f"Deploy the api service to production. My AWS key is {AWS_KEY} if you need it.")
            print(f"  alice: {len(said)} answers; last: {said[-1][:70]}...", file=sys.stderr)
            for what, call in [
                (
                    "a model her group may not use",
                    lambda: client.messages.create(
                        model="claude-opus-4-1", max_tokens=512, messages=[{"role": "user", "content": "Use opus."}]
                    ),
                ),
                ("an endpoint nobody may use", lambda: client.beta.files.list()),
            ]:
                try:
                    call()
                    print(f"  alice, {what}: unexpectedly allowed", file=sys.stderr)
                except anthropic.APIStatusError as e:
                    print(f"  alice, {what}: refused ({e.status_code})", file=sys.stderr)
            try:
                sdk_client(gw, wrong).messages.create(
                    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
                )
            except anthropic.APIStatusError as e:
                print(f"  a token for another audience: refused ({e.status_code})", file=sys.stderr)
            bob_client = sdk_client(gw, bob)
            bob_client.messages.create(
                model="claude-opus-4-1",
                max_tokens=256,
                system="Be brief.",
                messages=[{"role": "user", "content": "How do our deploys roll out?"}],
            )
            print("  bob: one question", file=sys.stderr)
        finally:
            gw.stop()  # SIGTERM: the recorder checkpoints its chain and uploads what is spooled
    store = workdir / "recordings"
    store.mkdir(exist_ok=True)  # exists once the recorder has written to it
    if args.out.exists():
        shutil.rmtree(args.out)
    rc = gatehouse(["report", str(store), "--out", str(args.out), "--title", "Gatehouse demo"])
    index = args.out / "index.html"
    has_records = any((store / "records").glob("*/*.json"))
    if not has_records:
        print(
            "demo: the gateway recorded nothing: the recorder is not in the addon stack yet "
            "(addons/gateway.py). The report is empty.",
            file=sys.stderr,
        )
        rc = rc or 3
    print(f"Report: {index.as_uri()}")
    if args.screenshot and has_records:
        pages = sorted((args.out / "sessions").glob("*.html"), key=lambda p: p.stat().st_size, reverse=True)
        screenshot(pages[0], args.screenshot)
        print(f"Screenshot: {args.screenshot}")
    if tmp is not None:
        tmp.cleanup()
    return rc


def screenshot(page: Path, target: Path, width: int = 1200, height: int = 1800) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--screenshot={target.resolve()}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


if __name__ == "__main__":
    sys.exit(main())
