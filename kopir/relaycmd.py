"""``kopir relay serve|secret|links``: run the MTProto relay, make secrets, print links."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kopir.config import Config, ConfigError, RelaySecretConfig, load_config
from kopir.output import CommandFailed, emit
from relay import ListenError, LocalTestDC, Relay, RelaySettings, Secret
from relay.dc import DEFAULT_DCS, parse_host_port
from relay.tuning import describe_aes, tune_allocator


def _secret(config: Config, index: int, name: str, text: str) -> Secret:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise ConfigError(
            f"{config.path}: [[relay.secrets]] #{index + 1} ({name!r}): secret must be 32 hex "
            "characters (the 16-byte key; kopir relay secret makes one)"
        )
    return Secret(name, key)


def _address(config: Config, key: str, text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(f"{config.path}: [relay] {key}: {exc}") from None


# Where ``kopir run`` keeps the relay's secret when the config has no [[relay.secrets]].
KEPT_SECRET = Path("keys/relay.secret")


def with_kept_secret(config: Config) -> Config:
    """``config`` itself when it has ``[[relay.secrets]]``; otherwise, when the data dir holds
    the secret ``kopir run`` made (``keys/relay.secret``), ``config`` with that one, named
    ``local``: so ``relay serve`` and ``relay links`` see the relay ``kopir run`` runs."""
    if config.relay.secrets:
        return config
    path = config.in_data(KEPT_SECRET)
    try:
        secret = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return config
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the relay secret {path}: {exc}") from None
    if len(secret) != 32:
        raise ConfigError(f"{path} must hold the relay's 16-byte key as 32 hex characters")
    relay = replace(config.relay, secrets=[RelaySecretConfig("local", secret)])
    return replace(config, relay=relay)


def relay_settings(config: Config) -> RelaySettings:
    """Turn ``[relay]`` into ``RelaySettings``; every problem names the file and the key."""
    relay = config.relay
    if not relay.secrets:
        raise ConfigError(
            f"{config.path}: [relay] has no [[relay.secrets]] (and there is no "
            f"{config.in_data(KEPT_SECRET)} from kopir run); run kopir relay secret to make one"
        )
    secrets = tuple(_secret(config, i, s.name, s.secret) for i, s in enumerate(relay.secrets))
    if len({s.name for s in secrets}) != len(secrets):
        raise ConfigError(f"{config.path}: [[relay.secrets]] names must be distinct")
    dcs = {}
    for number, address in relay.dc.items():
        if not number.isdigit() or not 1 <= int(number) <= 1000:
            raise ConfigError(f"{config.path}: [relay.dc] key {number!r} must be a DC number")
        dcs[int(number)] = _address(config, f"dc.{number}", address)
    limits = relay.limits
    return RelaySettings(
        listen=tuple(_address(config, "listen", a) for a in relay.listen),
        secrets=secrets,
        modes=frozenset(relay.modes),
        tls_domain=relay.tls_domain,
        mask_host=relay.mask_host or None,
        mask_port=relay.mask_port,
        dc=dcs,
        handshake_timeout=limits.handshake_timeout,
        idle_timeout=limits.idle_timeout,
        max_connections=limits.max_connections,
        max_connections_per_secret=limits.max_connections_per_secret,
        skew_past=limits.time_skew_past,
        skew_future=limits.time_skew_future,
        replay_cache=limits.replay_cache,
        strict_sni=relay.strict_sni,
        metrics_listen=_address(config, "metrics_listen", relay.metrics_listen)
        if relay.metrics_listen
        else None,
    )


def secret_links(settings: RelaySettings, host: str, port: int) -> list[dict[str, str]]:
    """One entry per secret and enabled mode, with its t.me and tg:// links."""
    out = []
    domain = settings.tls_domain.encode("ascii").hex()
    prefixes = {"ee": ("ee", domain), "dd": ("dd", ""), "classic": ("", "")}
    for secret in settings.secrets:
        for mode in ("ee", "dd", "classic"):
            if mode not in settings.modes:
                continue
            prefix, suffix = prefixes[mode]
            full = prefix + secret.key.hex() + suffix
            query = f"proxy?server={host}&port={port}&secret={full}"
            out.append({"name": secret.name, "mode": mode, "secret": full,
                        "tme": f"https://t.me/{query}", "tg": f"tg://{query}"})  # fmt: skip
    return out


async def start_local_dc(
    config: Config, settings: RelaySettings
) -> tuple[RelaySettings, LocalTestDC | None]:
    """With ``[relay] local_test_dc``: the stand-in DC, and settings that dial it for every DC
    number ``[relay.dc]`` does not override."""
    if not config.relay.local_test_dc:
        return settings, None
    dc = await LocalTestDC().start()
    local = {number: ("127.0.0.1", dc.port) for number in DEFAULT_DCS}
    print(f"local test DC on 127.0.0.1:{dc.port} (a stand-in, not Telegram)", flush=True)
    return replace(settings, dc={**local, **settings.dc}), dc


async def start_relay(config: Config, settings: RelaySettings) -> Relay:
    """A started relay; a port that cannot be had is a ``ConfigError`` (exit 2), as the web
    app's is, with nothing left listening."""
    relay = Relay(settings)
    try:
        await relay.start()
    except ListenError as exc:
        raise ConfigError(f"{config.path}: [relay] {exc}") from None
    return relay


async def _serve(path: Path, config: Config) -> int:
    settings, local_dc = await start_local_dc(config, relay_settings(config))
    try:
        relay = await start_relay(config, settings)
    except ConfigError:
        if local_dc is not None:
            await local_dc.stop()
        raise
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    for host, port in relay.addresses:
        modes = ", ".join(sorted(settings.modes))
        print(f"relay listening on {host}:{port} ({modes}; {loop_name} loop)", flush=True)
    print(f"upload keystreams: {describe_aes(relay.aes_speedup)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(relay, path))
    await stop.wait()
    await relay.stop()
    if local_dc is not None:
        await local_dc.stop()
    print("relay stopped", flush=True)
    return 0


def _reload(relay: Relay, path: Path) -> None:
    """SIGHUP: re-read the secrets; a bad file keeps the running secrets."""
    try:
        relay.reload(relay_settings(with_kept_secret(load_config(path))).secrets)
    except ConfigError as exc:
        print(f"kopir: reload failed, keeping the old secrets: {exc}", file=sys.stderr, flush=True)
        return
    names = ", ".join(s.name for s in relay.settings.secrets)
    print(f"{time.strftime('%H:%M:%S')} reloaded secrets: {names}", flush=True)


def relay_serve(args: argparse.Namespace) -> int:
    path = Path(args.config)
    config = with_kept_secret(load_config(path))
    tune_allocator()
    if not args.no_uvloop:
        try:
            import uvloop  # the optional "fast" extra

            uvloop.install()
        except ImportError:
            pass
    return asyncio.run(_serve(path, config))


def relay_secret(args: argparse.Namespace) -> int:
    key = os.urandom(16).hex()
    domain = args.domain.encode("ascii").hex() if args.domain else ""
    data = {"secret": key, "dd": "dd" + key, "ee": "ee" + key + domain if domain else None}
    lines = [
        "[[relay.secrets]]",
        'name = "default"',
        f'secret = "{key}"',
        "",
        f"# dd link secret: dd{key}",
    ]
    if domain:
        lines.append(f"# ee link secret: ee{key}{domain}")
    emit(args.json, "\n".join(lines), data)
    return 0


def relay_links(args: argparse.Namespace) -> int:
    config = with_kept_secret(load_config(Path(args.config)))
    settings = relay_settings(config)
    listen_host, port = settings.listen[0]
    host = args.host or listen_host
    if host in ("0.0.0.0", "::") and not args.host:
        raise CommandFailed("the relay listens on all addresses: give --host PUBLIC-NAME", code=2)
    links = secret_links(settings, host, args.port or port)
    if args.json:
        emit(True, "", {"links": links})
        return 0
    for link in links:
        print(f"{link['name']} ({link['mode']}):\n  {link['tme']}\n  {link['tg']}")
        if args.qr:
            _terminal_qr(link["tg"])
    return 0


def _terminal_qr(text: str) -> None:
    import qrcode

    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.print_ascii(out=sys.stdout, invert=True)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    relay = sub.add_parser("relay", help="the MTProto relay").add_subparsers(
        dest="action", required=True
    )
    serve = relay.add_parser("serve", parents=[common], help="run the relay")
    serve.add_argument("-c", "--config", default="config.toml", help="config file ([relay])")
    serve.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's loop even if uvloop is installed"
    )
    serve.set_defaults(func=relay_serve)
    secret = relay.add_parser("secret", parents=[common], help="make a new relay secret")
    secret.add_argument("--domain", help="fake-TLS domain, to print the ee link secret too")
    secret.set_defaults(func=relay_secret)
    links = relay.add_parser("links", parents=[common], help="print each secret's links")
    links.add_argument("-c", "--config", default="config.toml", help="config file ([relay])")
    links.add_argument("--host", help="public host name or address in the links")
    links.add_argument("--port", type=int, help="public port (default: the first listen port)")
    links.add_argument("--qr", action="store_true", help="also draw a QR code in the terminal")
    links.set_defaults(func=relay_links)
