"""Choosing and building the configured backend: ``make_backend(sms, data_dir)``.

Theory of operation
-------------------
The application's ``[sms]`` config section names a backend (``outbox``, ``smpp``, ``twilio``,
``vonage``, ``infobip``, ``android`` or ``http``) and has one table per backend. The Protocols
below say which values each needs; any object with those attributes will do (kopir passes its
frozen config dataclasses), so smsgw does not depend on the application. ``make_backend``
checks the chosen table only, resolves secrets written ``env:NAME`` from the environment, and
builds the backend; every mistake (an empty required key, an unset variable, a bad URL or
template) is a ``BackendConfigError`` naming the key and saying what to write, raised before
anything is queued or sent. Other tables are not looked at, so an unused backend's keys may
stay empty.

``webhook_routes(backend)`` gives the aiohttp handlers a backend needs mounted to receive
delivery reports and inbound SMS (none for outbox, SMPP and the generic backend).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from smsgw.backend import Backend
from smsgw.errors import SmsError
from smsgw.generic import GenericHttpBackend
from smsgw.http import ProviderError
from smsgw.outbox import OutboxBackend
from smsgw.providers import AndroidGatewayBackend, InfobipBackend, TwilioBackend, VonageBackend
from smsgw.smpp import SmppBackend, SmppError, SmppSettings
from smsgw.webhooks import Handler

BACKENDS = ("outbox", "smpp", "twilio", "vonage", "infobip", "android", "http")


class BackendConfigError(SmsError):
    """The configured backend cannot be built: a key is missing or wrong, or a secret unset."""


class SmppOptions(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def system_id(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def window(self) -> int: ...
    @property
    def throughput(self) -> float: ...


class TwilioOptions(Protocol):
    @property
    def account_sid(self) -> str: ...
    @property
    def auth_token(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def messaging_service_sid(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def status_callback(self) -> str: ...
    @property
    def inbound_url(self) -> str: ...


class VonageOptions(Protocol):
    @property
    def api_key(self) -> str: ...
    @property
    def api_secret(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def base_url(self) -> str: ...


class InfobipOptions(Protocol):
    @property
    def api_key(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def base_url(self) -> str: ...


class AndroidOptions(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def webhook_key(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def window(self) -> float: ...


class HttpOptions(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> str: ...
    @property
    def body_type(self) -> str: ...
    @property
    def success(self) -> Sequence[int]: ...
    @property
    def id_path(self) -> str: ...


class SmsOptions(Protocol):
    """The ``[sms]`` section, as far as choosing a backend goes."""

    @property
    def backend(self) -> str: ...
    @property
    def outbox(self) -> Path: ...
    @property
    def smpp(self) -> SmppOptions: ...
    @property
    def twilio(self) -> TwilioOptions: ...
    @property
    def vonage(self) -> VonageOptions: ...
    @property
    def infobip(self) -> InfobipOptions: ...
    @property
    def android(self) -> AndroidOptions: ...
    @property
    def http(self) -> HttpOptions: ...


class _Secrets:
    """Reads config values, resolving ``env:NAME``; names the key in every complaint."""

    def __init__(self, section: str, environ: Mapping[str, str]) -> None:
        self.section, self.environ = section, environ

    def value(self, key: str, value: str, *, required: bool = True) -> str:
        if value.startswith("env:"):
            name = value[4:]
            if name not in self.environ:
                raise BackendConfigError(f"[{self.section}] {key} names ${name}, which is not set")
            value = self.environ[name]
        if required and not value:
            backend = self.section.removeprefix("sms.")
            raise BackendConfigError(
                f"[{self.section}] {key} is empty; the {backend} backend needs it"
            )
        return value


def make_backend(
    sms: SmsOptions, data_dir: Path, environ: Mapping[str, str] | None = None
) -> Backend:
    """The backend ``sms.backend`` names, built from its table; ``BackendConfigError`` if not."""
    kind = sms.backend
    builders: dict[str, Callable[[_Secrets], Backend]] = {
        "outbox": lambda _: OutboxBackend(data_dir / sms.outbox),
        "smpp": lambda s: _smpp(sms.smpp, s),
        "twilio": lambda s: _twilio(sms.twilio, s),
        "vonage": lambda s: _vonage(sms.vonage, s),
        "infobip": lambda s: _infobip(sms.infobip, s),
        "android": lambda s: _android(sms.android, s),
        "http": lambda s: _generic(sms.http, s),
    }
    if kind not in builders:
        raise BackendConfigError(f"[sms] backend {kind!r} is not one of {', '.join(BACKENDS)}")
    secrets = _Secrets(f"sms.{kind}", os.environ if environ is None else environ)
    try:
        return builders[kind](secrets)
    except (ProviderError, SmppError) as exc:
        reason = str(exc).removeprefix(f"{kind}: ")
        where = "" if reason.startswith("[") else f"[sms.{kind}] "
        raise BackendConfigError(where + reason) from None


def webhook_routes(backend: Backend) -> dict[str, Handler]:
    """The webhook handlers, by path, that ``backend`` needs served (empty when none)."""
    routes: Callable[[], dict[str, Handler]] | None = getattr(backend, "routes", None)
    return routes() if routes is not None else {}


def _smpp(o: SmppOptions, s: _Secrets) -> Backend:
    settings = SmppSettings(
        host=o.host,
        port=o.port,
        system_id=o.system_id,
        password=s.value("password", o.password, required=False),
        window=o.window,
        throughput=o.throughput,
    )
    return SmppBackend(settings)


def _twilio(o: TwilioOptions, s: _Secrets) -> Backend:
    if bool(o.sender) == bool(o.messaging_service_sid):
        raise BackendConfigError("[sms.twilio] set exactly one of sender and messaging_service_sid")
    return TwilioBackend(
        s.value("base_url", o.base_url),
        s.value("account_sid", o.account_sid),
        s.value("auth_token", o.auth_token),
        from_=o.sender or None,
        messaging_service_sid=o.messaging_service_sid or None,
        status_callback=o.status_callback or None,
        inbound_url=o.inbound_url or None,
    )


def _vonage(o: VonageOptions, s: _Secrets) -> Backend:
    return VonageBackend(
        s.value("base_url", o.base_url),
        s.value("api_key", o.api_key),
        s.value("api_secret", o.api_secret),
        from_=s.value("sender", o.sender),
    )


def _infobip(o: InfobipOptions, s: _Secrets) -> Backend:
    return InfobipBackend(
        s.value("base_url", o.base_url),
        s.value("api_key", o.api_key),
        from_=s.value("sender", o.sender),
    )


def _android(o: AndroidOptions, s: _Secrets) -> Backend:
    if o.limit < 1:
        raise BackendConfigError("[sms.android] limit must be at least 1")
    return AndroidGatewayBackend(
        s.value("base_url", o.base_url),
        s.value("username", o.username),
        s.value("password", o.password),
        o.window / o.limit,
        limit=o.limit,
        webhook_key=s.value("webhook_key", o.webhook_key, required=False) or None,
    )


def _generic(o: HttpOptions, s: _Secrets) -> Backend:
    if o.body_type not in ("json", "form"):
        raise BackendConfigError('[sms.http] body_type must be "json" or "form"')
    headers = {name: s.value(f"headers.{name}", v, required=False) for name, v in o.headers.items()}
    return GenericHttpBackend(
        s.value("url", o.url),
        method=o.method,
        headers=headers,
        body=o.body,
        body_type="json" if o.body_type == "json" else "form",
        success=o.success,
        id_path=o.id_path,
    )
