"""Making a machine ready: the data directory, its keys, the log, the trust root, and a config.

Theory of operation: every piece is made only when it is missing. A file that is there is never
replaced, and is reported as *kept*, so running ``kopir init`` (or starting ``kopir run``) again
is always safe. Each step returns an :class:`Item` saying what it is, where, its mode, and
whether it was made now; the CLI prints them.

- ``ensure_data(config)`` makes the data directory (0700), the online signing key pair (secret
  0600; encrypted with a passphrase when one is given), the transparency log and its key, a
  trust root naming the signing key (roles root, lists, links) and the log key (role log), the
  distribution secret and the subscriber key. ``kopir init`` and ``kopir run`` both call it.
- ``prepare(config)`` does that and opens what the publisher loop needs (key, log, public dir).
- ``initialize(...)`` is ``kopir init``: it writes a config from the example shipped in the
  package (``kopir/config.example.toml``, a symlink to the repo's file, so an installed wheel
  carries the same text), filling in ``[data] dir`` and a new ``[[relay.secrets]]``, then
  calls ``ensure_data``. An existing config is kept unless ``force_config``; it is then moved
  aside to ``<name>.<time>.bak`` rather than lost.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import proxylist
import signing
import smsgw
from kopir.config import Config, ConfigError, load_config
from signing.canonical import rfc3339
from signing.fileio import write_atomic
from signing.keyfiles import PassphraseSource, passphrase_from_env_or_prompt
from signing.minisign import parse_secret_key

TRUST_LIFETIME = 365 * 86400
RELAY_SECRET_NAME = "default"
EXAMPLE_NAME = "config.example.toml"


class SetupError(Exception):
    """Something in the data directory or config could not be made; the message says what to
    do. Nothing that was there before is changed."""


@dataclass(frozen=True)
class Item:
    """One thing ``kopir init`` looked after."""

    what: str
    """A stable name: ``config``, ``data_dir``, ``signing_key``, ``log_key``, ..."""
    path: Path
    made: bool
    """True when made now; False when it was there and was kept as it is."""
    mode: int
    """Its permission bits now, e.g. 0o600."""
    note: str = ""

    def line(self) -> str:
        verb = "made" if self.made else "kept"
        note = f", {self.note}" if self.note else ""
        return f"{verb}  {self.what.replace('_', ' '):<20} {self.path} (mode {self.mode:04o}{note})"


@dataclass(frozen=True)
class DataReport:
    items: tuple[Item, ...]
    key_id: str
    """The online signing key's minisign key id in hex, as ``kopir keys generate`` prints it."""


@dataclass(frozen=True)
class Prepared:
    """What ``kopir run``'s publisher loop works with, once ``ensure_data`` has run."""

    report: DataReport
    key: signing.SecretKey
    trust_path: Path
    log: signing.LogStore
    public_dir: Path


@dataclass(frozen=True)
class InitReport:
    config_path: Path
    data_dir: Path
    config: Item
    relay_secret: bool
    """True when a new ``[[relay.secrets]]`` went into a config written now."""
    data: DataReport
    kept_secret: bool = False
    """True when the config written now took the replaced config's relay secret."""

    @property
    def items(self) -> tuple[Item, ...]:
        return (self.config, *self.data.items)


# -- the data directory ------------------------------------------------------------------


def ensure_data(config: Config, passphrase: bytes | None = None) -> DataReport:
    """Make whatever of the data directory is missing; keep everything that is there.

    A new online signing key is encrypted with ``passphrase`` when one is given (``kopir run``
    then needs ``KOPIR_KEY_PASSPHRASE``), and is otherwise written unencrypted, mode 0600, so an
    unattended ``kopir run`` can sign.
    """
    try:
        items = [_ensure_dir(config.data_dir, "data_dir")]
        key_path = config.in_data(config.signing.key)
        key_items, new_key = _ensure_key_pair(key_path, "signing", passphrase)
        items += key_items
        log, log_items = _ensure_log(config)
        items += log_items
        items.append(_ensure_trust(config, new_key or key_path, log, passphrase))
        items.append(_ensure_distribution_secret(config.in_data(config.distribution.secret)))
        items.append(_ensure_subscriber_key(config.in_data(config.subscribers.key)))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise SetupError(
            f"cannot set up the data directory{where}: {exc.strerror or exc}; check that this "
            "user may write there, or choose another with --data"
        ) from None
    return DataReport(tuple(items), _key_id(key_path, passphrase))


def prepare(config: Config, passphrase: bytes | None = None) -> Prepared:
    """``ensure_data``, then load the online key and open the log and the public directory."""
    report = ensure_data(config, passphrase)
    key_path = config.in_data(config.signing.key)
    key = signing.load_secret_key(key_path, _passphrase_source(passphrase))
    log = signing.LogStore(config.in_data(config.log.dir))
    public = config.data_dir / "public"
    public.mkdir(exist_ok=True, mode=0o755)
    trust_path = config.in_data(config.signing.trust)
    return Prepared(report, key, trust_path, log, public)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ensure_dir(path: Path, what: str) -> Item:
    made = not path.exists()
    if made:
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is reduced by the umask
    elif not path.is_dir():
        raise SetupError(f"{path} is not a directory; move it away or choose another --data")
    return Item(what, path, made, _mode(path))


def _ensure_parent(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)


def _ensure_key_pair(
    key_path: Path, role: str, passphrase: bytes | None
) -> tuple[list[Item], signing.SecretKey | None]:
    """``NAME.key`` (0600) and ``NAME.pub`` beside it, and the key when it is new (so an
    encrypted one need not be decrypted again); a secret key that is there is kept."""
    if key_path.suffix != ".key":
        raise SetupError(
            f"the {role} key {key_path} must be named NAME.key (its public key goes beside it "
            "as NAME.pub); change the path in the config"
        )
    pub_path = key_path.with_suffix(".pub")
    made, key = not key_path.exists(), None
    if made:
        if pub_path.exists():
            raise SetupError(
                f"{pub_path} exists but its secret key {key_path} does not; restore the secret "
                "key, or move the public key away to make a new pair"
            )
        _ensure_parent(key_path)
        key = signing.generate_key_pair(key_path.parent, key_path.stem, passphrase)[2]
    secret_note = "" if role == "log" else _encryption_note(key_path)
    items = [Item(f"{role}_key", key_path, made, _mode(key_path), secret_note)]
    if pub_path.exists():
        items.append(Item(f"{role}_public_key", pub_path, made, _mode(pub_path)))
    return items, key


def _encryption_note(key_path: Path) -> str:
    try:
        encrypted = parse_secret_key(key_path.read_text(encoding="ascii")).encrypted
    except (signing.SigningError, UnicodeDecodeError):
        return "not a minisign secret key"
    return "encrypted" if encrypted else "not encrypted"


def _ensure_log(config: Config) -> tuple[signing.LogStore, list[Item]]:
    log_dir = config.in_data(config.log.dir)
    items: list[Item] = []
    key_path = config.in_data(config.log.key) if config.log.key else None
    if key_path is not None:
        items += _ensure_key_pair(key_path, "log", None)[0]
    made = not (log_dir / "log.json").exists()
    log = signing.LogStore.open_or_create(log_dir, config.log.origin, key_path)
    if key_path is None:
        pub = log.key_path.with_suffix(".pub")
        items.append(Item("log_key", log.key_path, made, _mode(log.key_path)))
        items.append(Item("log_public_key", pub, made, _mode(pub)))
    items.insert(0, Item("log", log_dir, made, _mode(log_dir), f"origin {config.log.origin}"))
    return log, items


def _ensure_trust(
    config: Config,
    key: signing.SecretKey | Path,
    log: signing.LogStore,
    passphrase: bytes | None,
) -> Item:
    path = config.in_data(config.signing.trust)
    if path.exists():
        return Item("trust_root", path, False, _mode(path))
    _ensure_parent(path)
    if isinstance(key, Path):
        key = signing.load_secret_key(key, _passphrase_source(passphrase))
    write_trust_root(path, key, log.public_key())
    return Item("trust_root", path, True, _mode(path), f"names key {key.hex_id}")


def write_trust_root(path: Path, key: signing.SecretKey, log_key: signing.PublicKey) -> None:
    """A one-operator trust root: ``key`` for root, lists and links, ``log_key`` for the log,
    each with threshold 1, valid for a year; self-signed beside it as ``.<KEYID>.minisig``."""
    keys = (
        signing.TrustKey("publisher", key.public_key, frozenset({"root", "lists", "links"})),
        signing.TrustKey("log", log_key, frozenset({"log"})),
    )
    threshold = {"root": 1, "lists": 1, "links": 1, "log": 1}
    root = signing.TrustRoot(1, rfc3339(time.time() + TRUST_LIFETIME), keys, threshold)
    data = root.encode()
    write_atomic(path, data)
    signature = signing.sign_trust_root(data, key)
    signing.save_signature(path.with_name(signing.signature_name(path.name, signature)), signature)


def _ensure_distribution_secret(path: Path) -> Item:
    made = not path.exists()
    if made:
        _ensure_parent(path)
        proxylist.generate_secret(path)
    return Item("distribution_secret", path, made, _mode(path))


def _ensure_subscriber_key(path: Path) -> Item:
    made = not path.exists()
    if made:
        _ensure_parent(path)
        smsgw.create_key_file(path)
    return Item("subscriber_key", path, made, _mode(path))


def _passphrase_source(passphrase: bytes | None) -> PassphraseSource:
    if passphrase is None:
        return passphrase_from_env_or_prompt
    return lambda: passphrase


def _key_id(key_path: Path, passphrase: bytes | None) -> str:
    """From the public key beside it, so a kept encrypted key needs no passphrase."""
    pub = key_path.with_suffix(".pub")
    if pub.exists():
        return signing.load_public_key(pub).hex_id
    return signing.load_secret_key(key_path, _passphrase_source(passphrase)).hex_id


# -- the config --------------------------------------------------------------------------


def example_config() -> str:
    """The text of ``config.example.toml`` as shipped in the package."""
    try:
        return resources.files("kopir").joinpath(EXAMPLE_NAME).read_text(encoding="utf-8")
    except OSError as exc:
        raise SetupError(
            f"the example config is missing from the kopir package ({exc}); reinstall kopir"
        ) from None


def render_config(example: str, data_dir: str, relay_secret: str) -> str:
    """The example with ``[data] dir`` set and a ``[[relay.secrets]]`` table added."""
    text = _set_data_dir(example, data_dir)
    table = (
        "# Made by kopir init. `kopir relay links -c CONFIG` prints its links.\n"
        f'[[relay.secrets]]\nname = "{RELAY_SECRET_NAME}"\nsecret = "{relay_secret}"\n\n'
    )
    header = re.compile(r"^\[(?!\[?relay\.secrets\]).*\]\s*$", re.MULTILINE)
    anchor = text.find("# [[relay.secrets]]")
    following = header.search(text, anchor) if anchor >= 0 else None
    if following is None:
        text = text.rstrip("\n") + "\n\n" + table.rstrip("\n") + "\n"
    else:
        text = text[: following.start()] + table + text[following.start() :]
    parsed = tomllib.loads(text)
    secrets_ = parsed.get("relay", {}).get("secrets", [])
    if parsed.get("data", {}).get("dir") != data_dir or relay_secret not in str(secrets_):
        raise SetupError("the example config has an unexpected shape; reinstall kopir")
    return text


def _set_data_dir(example: str, data_dir: str) -> str:
    value = json.dumps(data_dir, ensure_ascii=False)  # a TOML basic string
    section = re.search(r"^\[data\]\s*$", example, re.MULTILINE)
    if section is None:
        return f"[data]\ndir = {value}\n\n{example}"
    line = re.compile(r"^dir\s*=.*$", re.MULTILINE)
    next_header = re.compile(r"^\[", re.MULTILINE).search(example, section.end())
    end = next_header.start() if next_header else len(example)
    found = line.search(example, section.end(), end)
    if found is None:
        return example[: section.end()] + f"\ndir = {value}" + example[section.end() :]
    return example[: found.start()] + f"dir = {value}" + example[found.end() :]


def _data_dir_setting(config_path: Path, data_dir: Path) -> str:
    """Relative to the config's directory when inside it (so both can move together)."""
    try:
        return data_dir.relative_to(config_path.parent).as_posix() or "."
    except ValueError:
        return str(data_dir)


def write_config(path: Path, text: str, force: bool) -> Item:
    """Write a new config (0600: it holds the relay secret). An existing one is kept, or with
    ``force`` moved aside to ``<name>.<YYYYmmddHHMMSS>.bak`` first."""
    note = ""
    if path.exists() and force:
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d%H%M%S')}.bak")
        os.link(path, backup)  # refuses to replace an earlier backup
        note = f"the old one is {backup.name}"
    write_atomic(path, text.encode("utf-8"), 0o600, exclusive=not force)
    return Item("config", path, True, _mode(path), note)


def initialize(
    config_path: Path,
    data: Path | None = None,
    force_config: bool = False,
    passphrase: bytes | None = None,
) -> InitReport:
    """``kopir init``: a config from the example (unless one is there), then ``ensure_data``."""
    config_path = Path(os.path.abspath(config_path))
    data_dir = Path(os.path.abspath(data)) if data is not None else config_path.parent / "data"
    if config_path.exists() and not force_config:
        config = load_config(config_path)
        _check_same_data(config, data_dir if data is not None else None)
        item = Item("config", config_path, False, _mode(config_path))
        return InitReport(
            config_path, config.data_dir, item, False, ensure_data(config, passphrase)
        )
    kept = _old_relay_secret(config_path)
    text = render_config(
        example_config(), _data_dir_setting(config_path, data_dir), kept or secrets.token_hex(16)
    )
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        item = write_config(config_path, text, force_config)
    except OSError as exc:
        raise SetupError(f"cannot write {config_path}: {exc.strerror or exc}") from None
    config = load_config(config_path)
    return InitReport(
        config_path, config.data_dir, item, not kept, ensure_data(config, passphrase), bool(kept)
    )


def _old_relay_secret(config_path: Path) -> str:
    """The relay secret of a config about to be replaced (its first ``[[relay.secrets]]``, or
    else the one ``kopir run`` kept in its data dir), so the links already handed out keep
    working; "" when there is none or the old config cannot be read."""
    from kopir.relaycmd import with_kept_secret  # kopir.relaycmd imports the relay package

    try:
        old = with_kept_secret(load_config(config_path))
    except ConfigError:
        return ""
    secret = old.relay.secrets[0].secret.lower() if old.relay.secrets else ""
    return secret if re.fullmatch(r"[0-9a-f]{32}", secret) else ""


def _check_same_data(config: Config, wanted: Path | None) -> None:
    if wanted is not None and wanted.resolve() != config.data_dir:
        raise SetupError(
            f"{config.path} already exists and keeps its data in {config.data_dir}, not "
            f"{wanted}: drop --data, or add --force-config to write a new config (the old one "
            "is kept as a .bak file)"
        )
