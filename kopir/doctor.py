"""``kopir doctor``: is this machine ready to run kopir, and if not, what to fix.

Theory of operation: each check is a small function returning a :class:`Check`: ``ok``,
``warn`` or ``fail``, one line of what was found, and for anything not ok one line of what to do
about it. The config is checked first; if it does not load, that is the only result, because
every other check reads it (and must never fall back to default addresses it was not given).
Then the checks that only read the config and the file system run (relay, publisher, SMS
backend, web and bot settings, trust root, key files: their modes, and each loaded as kopir
loads it, listen ports), and finally the network checks (the clock against an HTTP ``Date``
header, the mask host, each DC) run concurrently, each bounded by ``[doctor] timeout``, so the
doctor ends in a few seconds whatever the network does.

The listen-port checks live in ``kopir.doctorports``; a result is a ``kopir.doctorcheck.Check``.

The settings checks call the functions ``kopir run`` builds its parts with on startup
(``relay_settings``, ``smsgw.make_backend``, ``StatusHistory`` and ``make_app`` for the web
app, ``check_bot_settings`` for the bot), never a copy of their rules, so a config the doctor
passes is not one ``kopir run`` refuses. Those functions only build objects; nothing is
started, opened or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

import proxylist
import signing
import smsgw
from kopir.bot import BotError, check_bot_settings, resolve_secret
from kopir.bot.app import LOOPBACK
from kopir.config import Config, ConfigError, load_config
from kopir.doctorcheck import Check, ok
from kopir.doctorports import check_port, listen_addresses, shared_ports
from kopir.listcmd import publisher_relays
from kopir.relaycmd import relay_settings, with_kept_secret
from kopir.web import StatusError, StatusHistory, WebError, make_app
from kopir.web.auth import resolve_token
from proxylist import ProxylistError
from relay import DEFAULT_DCS, parse_host_port
from signing.canonical import parse_rfc3339
from signing.minisign import parse_secret_key


async def diagnose(config_path: Path) -> list[Check]:
    """Every check, in a stable order: config, settings, files, ports, then the network."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return [_config_failure(config_path, exc)]
    checks = [ok("config", f"{config.path} loads")]
    checks += [check_relay(config), check_publisher(config), check_trust(config)]
    checks += [check_sms(config), check_web(config), check_bot(config)]
    checks += file_checks(config)
    checks += [check_port(key, text) for key, text in listen_addresses(config)]
    checks += shared_ports(listen_addresses(config))
    checks += await network_checks(config)
    return checks


def _config_failure(path: Path, exc: ConfigError) -> Check:
    if not Path(path).exists():
        return Check("config", "fail", str(exc), f"run kopir init -c {path}, or pass -c FILE")
    return Check(
        "config", "fail", str(exc), "correct that key; config.example.toml documents every key"
    )


# -- settings ----------------------------------------------------------------------------


def check_relay(config: Config) -> Check:
    try:
        config = with_kept_secret(config)
        settings = relay_settings(config)
    except ConfigError as exc:
        fix = (
            "add a [[relay.secrets]] table (kopir relay secret prints one)"
            if not config.relay.secrets
            else "correct that key in [relay]"
        )
        return Check("relay settings", "fail", str(exc), fix)
    modes = ", ".join(sorted(settings.modes))
    if not settings.modes:
        return Check("relay settings", "fail", "[relay] modes is empty", 'set modes = ["ee", "dd"]')
    found = f"{len(settings.secrets)} secret(s); modes {modes}"
    if "classic" in settings.modes:
        return Check(
            "relay settings",
            "warn",
            f"{found}: classic obfuscated2 is easy for DPI to recognise",
            'remove "classic" from [relay] modes unless very old clients need it',
        )
    return ok("relay settings", found)


def check_publisher(config: Config) -> Check:
    pub = config.publisher
    if not pub.relays and not (pub.local_relay and config.relay.secrets):
        return Check(
            "publisher relays",
            "warn",
            "no relays to probe, so no list will be published",
            "add [[publisher.relays]], or set [publisher] local_relay with a [[relay.secrets]]",
        )
    try:
        relays = publisher_relays(config)
    except ConfigError as exc:
        return Check(
            "publisher relays", "fail", str(exc), "correct that [[publisher.relays]] entry"
        )
    return ok("publisher relays", f"{len(relays)} to probe: {', '.join(r.name for r in relays)}")


def check_trust(config: Config) -> Check:
    """The trust root parses, is in date, and names the online key for lists and links."""
    path = config.in_data(config.signing.trust)
    pub_path = config.in_data(config.signing.key).with_suffix(".pub")
    if not path.exists():
        return Check("trust root", "warn", f"{path} is missing", "run kopir init to make one")
    try:
        root = signing.parse_trust_root(path.read_bytes())
        expired = parse_rfc3339(root.expires, "expires") < time.time()
        key = signing.load_public_key(pub_path) if pub_path.exists() else None
    except (OSError, signing.SigningError) as exc:
        return Check("trust root", "fail", f"{path}: {exc}", "restore it from a backup")
    if expired:
        fix = "sign a new version with the root keys (kopir trust sign)"
        return Check("trust root", "fail", f"{path} expired {root.expires}", fix)
    if key is None:
        return ok("trust root", f"{path}, version {root.version}")
    try:
        for role in ("lists", "links"):
            root.key(key.key_id, role, time.time())
    except signing.VerificationError as exc:
        return Check(
            "trust root",
            "warn",
            f"{path} does not trust the online key {key.hex_id}: {exc}",
            f"add it with kopir trust add-key (roles lists, links) and re-sign {path.name}",
        )
    return ok("trust root", f"{path}, version {root.version}, names key {key.hex_id}")


def check_sms(config: Config) -> Check:
    """The SMS backend, built as ``kopir run`` and ``kopir sms send`` build it (``env:NAME``
    values read from this environment, as they would be)."""
    name, kind = "sms backend", config.sms.backend
    try:
        smsgw.make_backend(config.sms, config.data_dir)
    except smsgw.BackendConfigError as exc:
        fix = (
            f"correct [sms.{kind}] (config.example.toml documents every key), "
            'or set [sms] backend = "outbox" to try kopir without a provider'
        )
        return Check(name, "fail", str(exc), fix)
    return ok(name, kind)


def check_web(config: Config) -> Check:
    """The web app's settings (listen, operator token, history), built as ``kopir run``
    builds the app; whether the port is free is the port checks' to say."""
    name = "web settings"
    try:
        history = StatusHistory(config.web.history)
    except StatusError as exc:
        return Check(name, "fail", f"[web] history: {exc}", "correct [web] history")
    try:
        make_app(config, history)
    except WebError as exc:
        fix = "correct that key in [web]"
        if str(exc).startswith("[web] token"):
            where = (
                f"the variable ${config.web.token[4:]}"
                if config.web.token.startswith("env:")
                else "[web] token"
            )
            fix = f"set {where} to a new token (the message says how to make one)"
        return Check(name, "fail", str(exc), fix)
    on = resolve_token(config.web.token, os.environ) is not None  # valid: make_app read it
    return ok(name, f"listen {config.web.listen}, operator pages {'on' if on else 'off'}")


def check_bot(config: Config) -> Check:
    """The bot's settings, checked as ``kopir run`` checks them before building it, and the
    two mistakes that let it run but not as meant: no operators, and a token sent in clear."""
    name, bot = "bot", config.bot
    if not resolve_secret(bot.token, os.environ):
        return ok(name, "off ([bot] token is empty or its variable is not set)")
    try:
        check_bot_settings(config, os.environ)
    except BotError as exc:
        reason = str(exc).removeprefix(f"{config.path}: ")
        return Check(name, "fail", reason, "correct that key in [bot] (config.example.toml)")
    url = urlsplit(bot.base_url)
    if url.scheme != "https" and url.hostname not in LOOPBACK:
        detail = f"[bot] base_url {bot.base_url} is not https: the token would go out in clear"
        return Check(
            name, "warn", detail, 'use "https://api.telegram.org/bot" or a loopback Bot API server'
        )
    if not bot.admins:
        detail = "[bot] admins is empty: nobody can use /status, /relays, /publish or /broadcast"
        return Check(name, "warn", detail, "add your Telegram user id to [bot] admins")
    return ok(name, f"{bot.mode}, {len(bot.admins)} operator(s)")


# -- files -------------------------------------------------------------------------------


def secret_files(config: Config) -> list[tuple[str, Path, Callable[[Path], str]]]:
    """(name, path, reader) of each secret file ``kopir run`` reads; the reader loads it as
    kopir does and returns a note for the report, or raises what kopir's loader raises."""
    log_key = config.log.key or config.log.dir / "log.key"
    return [
        ("signing key", config.in_data(config.signing.key), read_minisign_key),
        ("log key", config.in_data(log_key), read_minisign_key),
        ("distribution secret", config.in_data(config.distribution.secret), read_distribution),
        ("subscriber key", config.in_data(config.subscribers.key), read_subscriber_key),
    ]


def read_minisign_key(path: Path) -> str:
    """A minisign secret key: decrypted (with ``KOPIR_KEY_PASSPHRASE`` when it is encrypted
    and that is set) and matched against the public key beside it."""
    parsed = parse_secret_key(path.read_text(encoding="ascii"))
    passphrase = os.environ.get(signing.PASSPHRASE_ENV)
    if parsed.encrypted and not passphrase:
        return f", encrypted: kopir run needs ${signing.PASSPHRASE_ENV} or a terminal"
    key = parsed.decrypt(passphrase.encode("utf-8") if passphrase else None)
    public = path.with_suffix(".pub")
    if public.exists() and signing.load_public_key(public).key_id != key.key_id:
        raise signing.KeyFileError(f"it is key {key.hex_id}, but {public.name} is another key")
    return f", key {key.hex_id}" + (", encrypted" if parsed.encrypted else "")


def read_distribution(path: Path) -> str:
    proxylist.load_secret(path)
    return ""


def read_subscriber_key(path: Path) -> str:
    smsgw.load_key_file(path)
    return ""


def file_checks(config: Config) -> list[Check]:
    checks = [check_data_dir(config.data_dir)]
    checks += [check_secret_file(*entry) for entry in secret_files(config)]
    mode = stat.S_IMODE(config.path.stat().st_mode)
    if mode & 0o077 and config.relay.secrets:
        checks.append(
            Check(
                "config file",
                "warn",
                f"{config.path} is mode {mode:04o}: others can read the relay secrets in it",
                f"chmod 600 {config.path}",
            )
        )
    return checks


def check_data_dir(path: Path) -> Check:
    name = "data dir"
    if not path.is_dir():
        return Check(name, "warn", f"{path} does not exist yet", "run kopir init to make it")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IWOTH:
        detail = f"{path} is mode {mode:04o}: anyone can write in it"
        return Check(name, "fail", detail, f"chmod 700 {path}")
    if mode & stat.S_IWGRP:
        detail = f"{path} is mode {mode:04o}: its group can write in it"
        return Check(name, "warn", detail, f"chmod 700 {path}")
    return ok(name, f"{path} (mode {mode:04o})")


def check_secret_file(what: str, path: Path, read: Callable[[Path], str]) -> Check:
    if not path.exists():
        return Check(what, "warn", f"{path} does not exist yet", "run kopir init to make it")
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return Check(what, "fail", f"{path} is not a regular file", "move it away; kopir init")
    if mode & 0o077:
        detail = f"{path} is mode {mode:04o}: other users can read it"
        return Check(what, "fail", detail, f"chmod 600 {path}")
    try:
        note = read(path)
    except (
        OSError,
        UnicodeDecodeError,
        signing.SigningError,
        smsgw.SmsError,
        ProxylistError,
    ) as exc:
        detail = f"{path} cannot be used as the {what}: {exc}"
        return Check(what, "fail", detail, "restore it from a backup")
    return ok(what, f"{path} (mode {mode:04o}{note})")


# -- the network -------------------------------------------------------------------------


async def network_checks(config: Config) -> list[Check]:
    """Clock, mask host and DCs at once; none takes much longer than ``[doctor] timeout``."""
    timeout = config.doctor.timeout
    jobs: list[Awaitable[Check]] = [check_clock(config), check_mask(config)]
    targets, local = dc_targets(config)
    jobs += [check_dc(number, address, timeout) for number, address in targets]
    results = await asyncio.gather(*(_bounded(job, timeout + 1) for job in jobs))
    if local:
        results.append(
            Check(
                "dc (local test)",
                "warn",
                "[relay] local_test_dc is on: DCs without a [relay.dc] override are a stand-in "
                "on loopback, not Telegram",
                "fine for a trial on one machine; set local_test_dc = false on a real relay",
            )
        )
    return results


async def _bounded(job: Awaitable[Check], limit: float) -> Check:
    try:
        return await asyncio.wait_for(job, limit)
    except TimeoutError:
        return Check("network", "fail", "a check did not finish in time", "run kopir doctor -v")


async def _connect(host: str, port: int, timeout: float) -> float:
    """Open and close a TCP connection; return the milliseconds it took."""
    start = time.monotonic()
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    elapsed = (time.monotonic() - start) * 1000
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout)
    return elapsed


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


async def check_mask(config: Config) -> Check:
    relay = config.relay
    host, port = relay.mask_host or relay.tls_domain, relay.mask_port
    try:
        ms = await _connect(host, port, config.doctor.timeout)
    except (OSError, TimeoutError) as exc:
        if _is_own_web(config, host, port):
            detail = f"{host}:{port} is this kopir's web app ([web] listen); kopir run starts it"
            return ok("mask host", detail)
        return Check(
            "mask host",
            "fail",
            f"cannot reach {host}:{port} ({_reason(exc)}); probers would see a dead end",
            "set [relay] mask_host and mask_port to a web server this machine can reach",
        )
    return ok("mask host", f"{host}:{port} reachable ({ms:.0f} ms)")


def _is_own_web(config: Config, host: str, port: int) -> bool:
    try:
        web_host, web_port = parse_host_port(config.web.listen)
    except ValueError:
        return False
    loopback = host in ("127.0.0.1", "::1", "localhost")
    return web_port == port and (web_host == host or (web_host in ("0.0.0.0", "::") and loopback))


def dc_targets(config: Config) -> tuple[list[tuple[int, str]], bool]:
    """(DC number, host:port) the relay would dial, and whether the local test DC stands in
    for the others. Overrides are read here, not through the relay settings, so a config
    error elsewhere never sends the check to a DC the config replaced."""
    overrides = {int(n): a for n, a in config.relay.dc.items() if n.isdigit()}
    local = config.relay.local_test_dc
    targets = []
    for number in sorted(set(DEFAULT_DCS) | set(overrides)):
        if number in overrides:
            targets.append((number, overrides[number]))
        elif not local:
            host, port = DEFAULT_DCS[number]
            targets.append((number, f"{host}:{port}"))
    return targets, local


async def check_dc(number: int, address: str, timeout: float) -> Check:
    name = f"dc {number}"
    try:
        host, port = parse_host_port(address)
    except ValueError as exc:
        return Check(name, "fail", f"[relay.dc] {number}: {exc}", 'write it as "host:port"')
    try:
        ms = await _connect(host, port, timeout)
    except (OSError, TimeoutError) as exc:
        return Check(
            name,
            "fail",
            f"cannot reach {host}:{port} ({_reason(exc)}); clients of DC {number} would fail",
            "check this machine's outbound firewall, or the [relay.dc] override",
        )
    return ok(name, f"{host}:{port} reachable ({ms:.0f} ms)")


async def check_clock(config: Config) -> Check:
    """Compare the clock with a web server's ``Date``; past the relay's fake-TLS window,
    clients are refused, so that is a failure."""
    url, doctor, limits = config.doctor.time_url, config.doctor, config.relay.limits
    if not url:
        return ok("clock", "not checked ([doctor] time_url is empty)")
    try:
        skew = await http_clock_skew(url, doctor.timeout)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Check(
            "clock",
            "warn",
            f"cannot read the time from {url} ({_reason(exc)})",
            "check the clock another way (timedatectl), or set [doctor] time_url",
        )
    off = f"{_span(abs(skew))} {'ahead of' if skew > 0 else 'behind'} {url}"
    window = min(limits.time_skew_past, limits.time_skew_future)
    ntp = "turn on time sync: timedatectl set-ntp true"
    if abs(skew) > window:
        return Check("clock", "fail", f"{off}: fake-TLS clients will be refused", ntp)
    if abs(skew) > doctor.max_skew:
        return Check("clock", "warn", f"{off} (more than [doctor] max_skew)", ntp)
    return ok("clock", f"within {_span(abs(skew))} of {url}")


async def http_clock_skew(url: str, timeout: float) -> float:
    """Seconds this machine's clock is ahead of the server's (negative: behind)."""
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=limit) as session:
        before = time.time()
        async with session.head(url, allow_redirects=False) as response:
            after = time.time()
            date = response.headers.get("Date")
    if not date:
        raise ValueError("no Date header in the reply")
    try:
        server = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        raise ValueError(f"unreadable Date header {date[:40]!r}") from None
    # The Date is truncated to the second: compare with our clock at the request's midpoint.
    return (before + after) / 2 - (server + 0.5)


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes}m"
    return f"{minutes // 60}h {minutes % 60}m"
