"""The script mitmdump loads: `mitmdump -s addons/gateway.py --set gateway_policy=FILE`.

Everything is imported from the installed `gatehouse` package by absolute name (this file is
also `gatehouse/gateway.py` inside it). mitmproxy puts this file's folder first on sys.path
while loading it, so no subpackage in this folder may be named like a library it uses.
"""

import importlib.util

if importlib.util.find_spec("gatehouse") is None:  # pragma: no cover - a set-up error, said plainly
    raise ImportError(
        "the gatehouse package is not installed in the Python that runs mitmdump: "
        "run `make install` (or `pip install -e .`) in the checkout, or `pip install gatehouse`"
    )

from gatehouse.mitm.access import Access
from gatehouse.mitm.approvals import ApprovalsApi
from gatehouse.mitm.commands import Commands
from gatehouse.mitm.credentials import Credentials
from gatehouse.mitm.exchanges import ExchangeIds
from gatehouse.mitm.identity import IdentityAddon
from gatehouse.mitm.logsafety import LogSafety
from gatehouse.mitm.masking import Masking
from gatehouse.mitm.policyloader import PolicyLoader
from gatehouse.mitm.protocols import ProtocolGuard
from gatehouse.mitm.recorder import Recorder
from gatehouse.mitm.runtime import Runtime
from gatehouse.mitm.shutdown import GracefulStop
from gatehouse.mitm.state import GatewayState

state = GatewayState()
identity = IdentityAddon()
masking = Masking()
recorder = Recorder()

# Stack order (docs/architecture.md): identity, access, credentials, masking, commands, approvals, recorder.
# First the guards that apply to every byte: log redaction (installed at load, before any
# other addon logs) and the protocol guard (only HTTP(S) the gateway parsed is carried).
addons = [
    LogSafety(state),
    ProtocolGuard(),
    PolicyLoader(state, identity=identity, masking=masking, recorder=recorder),
    ExchangeIds(),
    # Its `done` (on SIGTERM) drains flows and the spool before the other addons' `done` run;
    # while it does, new requests are refused.
    GracefulStop(state, recorder=recorder),
    identity,
    Access(state),
    ApprovalsApi(state),  # answers gatehouse.internal itself: nothing after it forwards that
    Credentials(state),
    masking,
    Commands(state),  # after masking: tool calls are judged on what the client would get
    recorder,
    Runtime(),  # last: its `running` comes after every other addon has started
]
