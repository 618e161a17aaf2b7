"""The fake alone, for demos and benchmarks:

    PYTHONPATH=tests python -m support.fake_upstream [--port N] [--tls] [--cert-dir DIR] [--tool-command CMD]

prints the base URL (and, with --tls, the CA certificate path), one per line, then serves until
killed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from support.fake_upstream.responders import claude_code_tool_responder
from support.fake_upstream.server import FakeUpstream


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m support.fake_upstream", description="A fake Anthropic API upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a CA of its own")
    parser.add_argument("--cert-dir", help="write (and keep) the TLS files here")
    parser.add_argument(
        "--tool-command",
        help="drive Claude Code: answer agent turns with a Bash tool_use running this command, then quote its output",
    )
    parser.add_argument("--api-key", help="reject requests that do not carry this key (401)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    up = FakeUpstream(
        tls=args.tls, host=args.host, port=args.port, cert_dir=args.cert_dir, api_key=args.api_key, verbose=args.verbose
    )
    if args.tool_command:
        up.responder = claude_code_tool_responder(args.tool_command)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with up:
        print(up.base_url, flush=True)
        if up.ca_cert_path:
            print(up.ca_cert_path, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
