"""kopir.web: the aiohttp web app of ``kopir run`` (public files, log proofs, the offline
verifier, posters, and the operator's status page and metrics), and the status history the
runner feeds it. See ``kopir.web.app`` for the routes."""

from kopir.web.app import (
    WebError,
    WebSources,
    bound_port,
    make_app,
    parse_listen,
    serve_web,
)
from kopir.web.auth import AuthError
from kopir.web.guard import Refused
from kopir.web.status import (
    BackendTotals,
    ListSample,
    ProbeRound,
    QueueSample,
    RelaySample,
    SendSample,
    StatusError,
    StatusHistory,
)

__all__ = [
    "AuthError",
    "BackendTotals",
    "ListSample",
    "ProbeRound",
    "QueueSample",
    "Refused",
    "RelaySample",
    "SendSample",
    "StatusError",
    "StatusHistory",
    "WebError",
    "WebSources",
    "bound_port",
    "make_app",
    "parse_listen",
    "serve_web",
]
