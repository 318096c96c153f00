"""Configuration: TOML read with ``tomllib`` into typed, frozen dataclasses (DESIGN.md §8).

Every section is a dataclass; a field's annotation says what the key must hold, and a number's
``Range`` which values it may take (``port: Port``, ``window: Positive``). The loader walks the
TOML tables against those dataclasses, so an unknown key, a wrong type, a number out of its range
or a bad duration is reported as one line naming the file, the key and what was expected
(``ConfigError``), and the CLI exits with code 2.

Relative paths are resolved against the directory of the config file (``[data] dir``) or the
data directory (everything else), so a config can be moved with its data.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(Exception):
    """A config file is missing, not TOML, or has a bad key. The message is one line."""


class Duration(float):
    """Seconds, written in TOML as a string like ``"90s"``, ``"15m"``, ``"72h"`` or ``"7d"``."""

    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    _PATTERN = re.compile(r"([0-9]+)([smhd])")
    MAX_DAYS = 36500
    """A hundred years: anything longer is a typo, and would overflow dates and timers."""

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = cls._PATTERN.fullmatch(text.strip())
        if not match or not match.group(1).strip("0"):
            shown = _shorten(text)
            raise ValueError(f'expected a duration like "90s", "15m", "72h" or "7d", got {shown}')
        digits = match.group(1).lstrip("0")
        seconds = int(digits) * cls._UNITS[match.group(2)] if len(digits) <= 20 else None
        if seconds is None or seconds > cls.MAX_DAYS * 86400:
            raise ValueError(f"a duration is at most {cls.MAX_DAYS}d, got {_shorten(text)}")
        return cls(seconds)


@dataclass(frozen=True)
class Range:
    """The numbers a key may hold: ``Annotated[int, Range(1, 65535)]``. The loader checks it,
    for each item of a list too."""

    low: int
    high: int | None = None
    """None: no upper bound but TOML's own (64-bit integers, finite floats)."""

    def __contains__(self, value: float) -> bool:
        return self.low <= value and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        return f"at least {self.low}" if self.high is None else f"from {self.low} to {self.high}"


Port = Annotated[int, Range(1, 65535)]
Positive = Annotated[int, Range(1)]
"""A count, size or window: 0 would stop the work (nothing sent, every connection refused)."""
NonNegative = Annotated[int, Range(0)]
"""A count where 0 means none or no limit, as the key's docstring says."""
UserId = Annotated[int, Range(1)]
"""A Telegram user id (negative ids are groups and channels, never a person)."""
HttpStatus = Annotated[int, Range(100, 599)]


def _shorten(text: str, limit: int = 40) -> str:
    """``repr`` of ``text``, cut to about ``limit`` characters so a message stays short."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def duration_arg(text: str) -> Duration:
    """An argparse ``type=`` for duration options such as ``--expires 72h``."""
    import argparse

    try:
        return Duration.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class DataConfig:
    dir: Path = Path("data")
    """Where kopir keeps keys, lists, the log and state; relative to the config file."""


@dataclass(frozen=True)
class SigningConfig:
    key: Path = Path("keys/publisher.key")
    """The online signing key (minisign secret key); relative to the data dir."""
    trust: Path = Path("trust.json")
    """The trust root this publisher works under; relative to the data dir."""
    link_expiry: Duration = Duration(72 * 3600)
    link_scheme: Literal["tme", "tg"] = "tme"
    """``tme`` (https://t.me/..., tappable in SMS apps) or ``tg`` (tg://..., for QR codes)."""


@dataclass(frozen=True)
class LogConfig:
    dir: Path = Path("log")
    """The transparency log directory; relative to the data dir."""
    origin: str = "kopir.example/log"
    """The log's name in checkpoints; also its note key name."""
    key: Path | None = None
    """The log's secret key; by default ``log.key`` inside the log directory."""
    checkpoint_interval: Duration = Duration(3600)


@dataclass(frozen=True)
class RelaySecretConfig:
    name: str
    """A label for metrics and links (never sent to clients)."""
    secret: str
    """The 16-byte key in hex (32 characters); links add the ee/dd prefix and domain."""


@dataclass(frozen=True)
class RelayLimitsConfig:
    handshake_timeout: Duration = Duration(10)
    idle_timeout: Duration = Duration(300)
    max_connections: Positive = 10_000
    max_connections_per_secret: NonNegative = 0
    """0 means no per-secret limit."""
    replay_cache: Annotated[int, Range(1, 10_000_000)] = 100_000
    """Handshakes remembered to refuse replays. An entry costs about 160 bytes, so 10 million
    take about 1.6 GB; anyone who knows a secret (a censor too) fills the cache, so a larger
    one would let them grow the relay until it runs out of memory."""
    time_skew_past: Duration = Duration(600)
    """How far a fake-TLS client's clock may be behind."""
    time_skew_future: Duration = Duration(1200)
    """How far it may be ahead."""


@dataclass(frozen=True)
class RelayConfig:
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:8443"])
    """host:port strings; IPv6 as "[::1]:8443"."""
    modes: list[Literal["ee", "dd", "classic"]] = field(default_factory=lambda: ["ee", "dd"])
    tls_domain: str = "example.com"
    mask_host: str = ""
    """Where failed clients are sent; empty means tls_domain."""
    mask_port: Port = 443
    strict_sni: bool = False
    metrics_listen: str = "127.0.0.1:9464"
    """Prometheus metrics; empty turns them off."""
    secrets: list[RelaySecretConfig] = field(default_factory=list)
    dc: dict[str, str] = field(default_factory=dict)
    """Overrides of the built-in DC table: "2" = "127.0.0.1:14443"."""
    local_test_dc: bool = False
    """Dial a stand-in DC on loopback instead of Telegram (trying kopir on one machine)."""
    limits: RelayLimitsConfig = field(default_factory=RelayLimitsConfig)


@dataclass(frozen=True)
class SmppConfig:
    host: str = "127.0.0.1"
    port: Port = 2775
    system_id: str = ""
    password: str = ""
    """The SMPP password, or "env:NAME" to read it from the environment."""
    window: Positive = 10
    """submit_sm PDUs in flight at once."""
    throughput: Annotated[float, Range(0)] = 0.0
    """Messages per second; 0 means unlimited."""


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str = ""
    auth_token: str = ""
    """The auth token, or "env:NAME" to read it from the environment."""
    sender: str = ""
    """The From number or sender id; leave empty to send through messaging_service_sid."""
    messaging_service_sid: str = ""
    base_url: str = "https://api.twilio.com"
    status_callback: str = ""
    """The public URL of our /sms/twilio/status webhook, as Twilio sees it; empty for none."""
    inbound_url: str = ""
    """The public URL of our /sms/twilio/inbound webhook (inbound SMS); empty for none."""


@dataclass(frozen=True)
class VonageConfig:
    api_key: str = ""
    api_secret: str = ""
    """The API secret, or "env:NAME"."""
    sender: str = ""
    base_url: str = "https://rest.nexmo.com"


@dataclass(frozen=True)
class InfobipConfig:
    api_key: str = ""
    """The API key, or "env:NAME"."""
    sender: str = ""
    base_url: str = "https://api.infobip.com"
    """Your account's base URL (xxxxx.api.infobip.com)."""


@dataclass(frozen=True)
class AndroidConfig:
    base_url: str = ""
    """The phone's local API, e.g. "http://192.168.1.10:8080"."""
    username: str = "sms"
    password: str = ""
    """The app's password, or "env:NAME"."""
    webhook_key: str = ""
    """The app's webhook signing key ("env:NAME" allowed); empty turns its webhooks off."""
    limit: Positive = 30
    """SMS per window before Android would ask the phone's user."""
    window: Duration = Duration(1800)


@dataclass(frozen=True)
class HttpSmsConfig:
    method: Literal["GET", "POST", "PUT", "PATCH"] = "POST"
    url: str = ""
    """May hold placeholders after the host: {to} {to_digits} {text} {id} {encoding}."""
    headers: dict[str, str] = field(default_factory=dict)
    """Header values may be "env:NAME"."""
    body: str = ""
    """The body template, with the same placeholders."""
    body_type: Literal["json", "form"] = "json"
    success: list[HttpStatus] = field(default_factory=lambda: [200, 201, 202])
    id_path: str = ""
    """Where the message id is in a JSON reply, e.g. "messages.0.id"; empty if none."""


@dataclass(frozen=True)
class SmsConfig:
    backend: Literal["outbox", "smpp", "twilio", "vonage", "infobip", "android", "http"] = "outbox"
    queue: Path = Path("sms/queue.db")
    """The durable SQLite queue; relative to the data dir."""
    outbox: Path = Path("sms/outbox")
    """Where the outbox backend writes messages; relative to the data dir."""
    window: Positive = 50
    """Messages the worker claims and hands to the backend at a time."""
    retry_delay: Duration = Duration(30)
    """Wait before retrying a throttled or failed-to-connect message."""
    smpp: SmppConfig = field(default_factory=SmppConfig)
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    vonage: VonageConfig = field(default_factory=VonageConfig)
    infobip: InfobipConfig = field(default_factory=InfobipConfig)
    android: AndroidConfig = field(default_factory=AndroidConfig)
    http: HttpSmsConfig = field(default_factory=HttpSmsConfig)


@dataclass(frozen=True)
class SubscribersConfig:
    db: Path = Path("sms/subscribers.db")
    """The encrypted subscriber store; relative to the data dir."""
    key: Path = Path("keys/subscribers.key")
    """The 32-byte key file (mode 0600) that encrypts numbers; made on first use."""
    default_region: str = "KZ"
    """How numbers without a country code are read."""
    test_numbers: list[str] = field(default_factory=list)
    """Subscribers ``kopir run`` adds on start (ru, established), for trying kopir."""


@dataclass(frozen=True)
class PublisherRelayConfig:
    """One ``[[publisher.relays]]`` entry; checked when the publisher turns it into a Relay."""

    name: str = ""
    """A label unique among the relays (reports, distribution); never published."""
    server: str = ""
    """Host name or IP address clients dial, as it goes into the list."""
    port: Annotated[int, Range(0, 65535)] = 0
    """The main port; 0 (unset) is reported as missing when the publisher reads the entry."""
    key: str = ""
    """The relay's 16-byte key in hex (32 characters), as in its ``[[relay.secrets]]``."""
    mode: Literal["ee", "dd", "classic"] = "ee"
    domain: str = ""
    """The fake-TLS domain; required for ``ee``, empty otherwise."""
    alt_ports: list[Port] = field(default_factory=list)
    """Other ports the relay listens on; the prober tries each."""
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PublisherConfig:
    name: str = "kopir.example"
    """The list's ``publisher`` field; verifiers remember versions per publisher."""
    dir: Path = Path("lists")
    """Where list.json and versions/<N>.json live; relative to the data dir."""
    list_lifetime: Duration = Duration(72 * 3600)
    renew_before: Duration = Duration(24 * 3600)
    """A list this close to its expiry is re-issued even when nothing changed."""
    probe_interval: Duration = Duration(15 * 60)
    probe_timeout: Duration = Duration(10)
    probe_concurrency: Positive = 50
    local_relay: str = ""
    """Also list this config's own [relay] secrets under this host name; empty: do not."""
    relays: list[PublisherRelayConfig] = field(default_factory=list)


@dataclass(frozen=True)
class DistributionConfig:
    k: Positive = 2
    """Relays per recipient."""
    epoch: Duration = Duration(7 * 24 * 3600)
    interval: Duration = Duration(24 * 3600)
    """At most one new set per recipient per interval."""
    secret: Path = Path("keys/distribution.key")
    record: Path = Path("distribution.db")
    new_pool_tag: str = "new"
    """Relays tagged so serve the ``new`` pool; the others the ``established`` one."""


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    """host:port of the web app; IPv6 as "[::1]:8080". Loopback unless you say otherwise."""
    token: str = "env:KOPIR_WEB_TOKEN"
    """The operator's bearer token (16+ characters), or "env:NAME"; empty or unset: no
    operator routes (/status and /metrics answer 403)."""
    session: Duration = Duration(12 * 3600)
    """How long a login through the form lasts."""
    history: Annotated[int, Range(1, 100_000)] = 288
    """Samples of each kind the status page keeps in memory for its charts; at most
    ``kopir.web.status.MAX_LIMIT``, which bounds the memory and the work of drawing them."""
    public_url: str = ""
    """How people reach the site, e.g. "https://kopir.example"; https makes cookies Secure."""
    poster_batches: list[str] = field(default_factory=list)
    """Batches anyone may fetch at /poster?batch=NAME; the operator may fetch any batch."""


@dataclass(frozen=True)
class BotConfig:
    token: str = "env:KOPIR_BOT_TOKEN"
    """The Bot API token from @BotFather, or "env:NAME"; empty or unset: no bot."""
    admins: list[UserId] = field(default_factory=list)
    """Telegram user ids of the operators; only they see /status, /relays, /publish, ..."""
    new_account_threshold: NonNegative = 0
    """User ids above this count as accounts made in the crisis (pool "new"); 0: everyone."""
    base_url: str = "https://api.telegram.org/bot"
    """The Bot API address; the token is appended (tests use a fake server on loopback)."""
    mode: Literal["polling", "webhook"] = "polling"
    poll_timeout: Duration = Duration(30)
    """How long one getUpdates call waits for news (long polling)."""
    webhook_listen: str = "127.0.0.1:8445"
    """host:port the webhook server listens on (put a TLS proxy in front of it)."""
    webhook_url: str = ""
    """The public https URL Telegram posts updates to; required in webhook mode."""
    webhook_secret: str = "env:KOPIR_BOT_WEBHOOK_SECRET"
    """Checked against X-Telegram-Bot-Api-Secret-Token, or "env:NAME"; required for webhooks."""
    flood_messages: Positive = 20
    """Messages one user may send per flood_window; more are answered once, then dropped."""
    flood_window: Duration = Duration(60)
    language: Literal["kk", "ru", "en"] = "ru"
    """Replies' language until a user picks one with /lang (or Telegram tells us theirs)."""
    state: Path = Path("bot.db")
    """Languages chosen and reports of dead relays, by keyed hash; relative to the data dir."""
    broadcast_timeout: Duration = Duration(300)
    """How long a /broadcast waits for the operator's confirmation."""


@dataclass(frozen=True)
class DoctorConfig:
    time_url: str = "https://www.google.com/"
    """A web server whose HTTP Date header ``kopir doctor`` compares the clock with; "" skips."""
    timeout: Duration = Duration(3)
    """How long each network check (clock, mask host, DCs) may take."""
    max_skew: Duration = Duration(30)
    """A larger clock difference is a warning (a failure past the relay's fake-TLS window)."""


@dataclass(frozen=True)
class Config:
    path: Path = field(default=Path("config.toml"), metadata={"internal": True})
    base_dir: Path = field(default=Path("."), metadata={"internal": True})
    """What a relative ``[data] dir`` is relative to: the config file's folder, or the working
    directory (when loaded) for a config that is not a regular file (``-c /dev/null``,
    ``-c <(...)``), which has no folder of its own."""
    data: DataConfig = field(default_factory=DataConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    log: LogConfig = field(default_factory=LogConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    sms: SmsConfig = field(default_factory=SmsConfig)
    subscribers: SubscribersConfig = field(default_factory=SubscribersConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)
    web: WebConfig = field(default_factory=WebConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    bot: BotConfig = field(default_factory=BotConfig)

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.data.dir).resolve()

    def in_data(self, path: Path) -> Path:
        return self.data_dir / path


def load_config(path: Path) -> Config:
    """Read and check a config file; raise ``ConfigError`` with one clear line on any problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValueError as exc:  # tomllib's int() of a number with more than 4300 digits
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    config: Config = _build(Config, raw, path, "")
    full = path.resolve()
    base = full.parent if path.is_file() else Path.cwd()
    return dataclasses.replace(config, path=full, base_dir=base)


def _build(cls: type[Any], table: dict[str, Any], path: Path, prefix: str) -> Any:
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{path}: unknown key {_show(name)}; expected one of: {known}")
        values[key] = _convert(hints[key], value, path, name)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(f"{path}: {where} needs {', '.join(missing)}")
    return cls(**values)


def _show(name: str) -> str:
    section, _, key = name.rpartition(".")
    return f"[{section}] {key}" if section else key


def _convert(kind: Any, value: Any, path: Path, name: str) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {name} must be a table [{name}]")
        return _build(kind, value, path, f"{name}.")
    origin = get_origin(kind)
    if origin is Annotated:
        base, *marks = get_args(kind)
        converted = _convert(base, value, path, name)
        for bounds in marks:
            if isinstance(bounds, Range) and converted not in bounds:
                raise ConfigError(f"{path}: {_show(name)} must be {bounds}, got {value!r}")
        return converted
    if origin is Literal:
        choices = get_args(kind)
        if value not in choices:
            allowed = " or ".join(repr(c) for c in choices)
            raise ConfigError(f"{path}: {_show(name)} must be {allowed}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        return _convert(options[0], value, path, name)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {_show(name)} must be a table")
        _, item_kind = get_args(kind)
        return {k: _convert(item_kind, v, path, f"{name}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {_show(name)} must be a list")
        (item,) = get_args(kind)
        return [_convert(item, v, path, f"{name}[{i}]") for i, v in enumerate(value)]
    return _scalar(kind, value, path, name)


def _scalar(kind: Any, value: Any, path: Path, name: str) -> Any:
    expected = {str: "a string", int: "a whole number", bool: "true or false", Path: "a path"}
    if kind is Duration:
        if not isinstance(value, str):
            raise ConfigError(f'{path}: {_show(name)} must be a duration string like "72h"')
        try:
            return Duration.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {_show(name)}: {exc}") from None
    number = kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool)
    if number and isinstance(value, int) and not -(2**63) <= value < 2**63:  # TOML's own range
        raise ConfigError(f"{path}: {_show(name)} is out of range, got {_shorten(str(value))}")
    if kind is float and number:
        if not math.isfinite(value):
            raise ConfigError(f"{path}: {_show(name)} must be a finite number, got {value!r}")
        return float(value)
    python_kind = str if kind is Path else kind
    if isinstance(value, python_kind) and not (isinstance(value, bool) and kind is not bool):
        return Path(value) if kind is Path else value
    what = expected.get(kind, getattr(kind, "__name__", str(kind)))
    raise ConfigError(f"{path}: {_show(name)} must be {what}, got {value!r}")
