"""The script mitmdump loads: `mitmdump -s addons/gateway.py --set gateway_policy=FILE`.

mitmproxy puts this file's folder first on sys.path while loading it, so everything is
imported from the installed `addons` package by absolute name, and no module in this
folder may be named like a library it uses (jwt, re2, http...).
"""

from addons.access import Access
from addons.credentials import Credentials
from addons.exchanges import ExchangeIds
from addons.gatewaypolicy import PolicyLoader
from addons.identity import IdentityAddon
from addons.logsafety import LogSafety
from addons.masking import Masking
from addons.protocols import ProtocolGuard
from addons.recorder import Recorder
from addons.state import GatewayState

state = GatewayState()
identity = IdentityAddon()
masking = Masking()
recorder = Recorder()

# Stack order (DESIGN.md): identity, access, credentials, masking, commands, approvals, recorder.
# First the guards that apply to every byte: log redaction (installed at load, before any
# other addon logs) and the protocol guard (only HTTP(S) the gateway parsed is carried).
addons = [
    LogSafety(state),
    ProtocolGuard(),
    PolicyLoader(state, identity=identity, masking=masking, recorder=recorder),
    ExchangeIds(),
    identity,
    Access(state),
    Credentials(state),
    masking,
    recorder,
]
