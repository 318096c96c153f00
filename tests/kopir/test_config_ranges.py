"""Numbers in the config: each key's ``Range``, checked when the file loads, so a port of 99999
or a window of 0 is one clear line (exit 2) instead of a hang or a traceback later."""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kopir.config import Config, ConfigError, Range, load_config
from kopir.listcmd import publisher_relays
from kopir.web.status import MAX_LIMIT
from tests.cli import kopir

INT64_MAX = 2**63 - 1

RANGES = [  # table, key, lowest, highest (None: up to TOML's own limit)
    ("relay", "mask_port", 1, 65535),
    ("relay.limits", "max_connections", 1, None),
    ("relay.limits", "max_connections_per_secret", 0, None),
    ("relay.limits", "replay_cache", 1, 10_000_000),
    ("sms", "window", 1, None),
    ("sms.smpp", "port", 1, 65535),
    ("sms.smpp", "window", 1, None),
    ("sms.smpp", "throughput", 0, None),
    ("sms.android", "limit", 1, None),
    ("sms.http", "success", 100, 599),
    ("publisher", "probe_concurrency", 1, None),
    ("publisher.relays", "port", 0, 65535),
    ("publisher.relays", "alt_ports", 1, 65535),
    ("distribution", "k", 1, None),
    ("web", "history", 1, MAX_LIMIT),
    ("bot", "admins", 1, None),
    ("bot", "new_account_threshold", 0, None),
    ("bot", "flood_messages", 1, None),
]


@dataclasses.dataclass(frozen=True)
class NumberKey:
    """One numeric key of the config, as the dataclasses declare it."""

    table: str
    key: str
    kind: type
    """int or float."""
    many: bool
    """A list of numbers (each item is checked)."""
    bounds: Range | None
    array: bool
    """The table is an array of tables ([[publisher.relays]])."""

    @property
    def header(self) -> str:
        return f"[[{self.table}]]" if self.array else f"[{self.table}]"

    @property
    def shown(self) -> str:
        """How messages name the key (the first item, for lists)."""
        table = f"{self.table}[0]" if self.array else self.table
        return f"[{table}] {self.key}[0]" if self.many else f"[{table}] {self.key}"

    def read(self, config: Config) -> list[Any]:
        """The key's numbers as loaded (of the first table, in an array of tables)."""
        value: Any = config
        for part in self.table.split("."):
            value = getattr(value, part)
        value = getattr(value[0] if self.array else value, self.key)
        return list(value) if self.many else [value]


def _number(kind: Any) -> tuple[type, Range | None] | None:
    bounds = None
    if get_origin(kind) is Annotated:
        kind, *marks = get_args(kind)
        bounds = next((m for m in marks if isinstance(m, Range)), None)
    return (kind, bounds) if kind in (int, float) else None


def number_keys(cls: type = Config, table: str = "", array: bool = False) -> list[NumberKey]:
    """Every int or float key (or list of them) under ``cls``, found from the annotations."""
    keys = []
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        kind, where = hints[f.name], f"{table}.{f.name}".strip(".")
        many = get_origin(kind) is list
        item = get_args(kind)[0] if many else kind
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            keys += number_keys(item, where, array=many)
        elif (number := _number(item)) is not None:
            keys.append(NumberKey(table, f.name, number[0], many, number[1], array))
    return keys


KEYS = {(k.table, k.key): k for k in number_keys()}


def write(folder: Path, text: str) -> Path:
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def render(key: NumberKey, value: float) -> str:
    number = repr(value)  # ints as digits; floats as TOML reads them (1e-05, -inf, nan)
    return f"{key.header}\n{key.key} = {f'[{number}]' if key.many else number}\n"


def test_every_number_in_the_config_has_the_range_listed_here() -> None:
    declared = {
        name: (k.bounds.low, k.bounds.high) if k.bounds else None for name, k in KEYS.items()
    }
    assert declared == {(table, key): (low, high) for table, key, low, high in RANGES}


def _boundaries() -> list[Any]:
    """(table, key, value, expected message or None) at and one past each end of each range."""
    cases: list[tuple[str, str, float, str | None]] = []
    for table, name, low, high in RANGES:
        key = KEYS[table, name]
        allowed = f"at least {low}" if high is None else f"from {low} to {high}"
        cases.append((table, name, low, None))
        below = math.nextafter(low, -math.inf) if key.kind is float else low - 1
        cases.append((table, name, below, f"must be {allowed}, got {below!r}"))
        if high is not None:
            cases.append((table, name, high, None))
            cases.append((table, name, high + 1, f"must be {allowed}, got {high + 1}"))
        elif key.kind is float:
            cases.append((table, name, sys.float_info.max, None))
            cases.append((table, name, math.inf, "must be a finite number, got inf"))
        else:
            cases.append((table, name, INT64_MAX, None))
            cases.append((table, name, INT64_MAX + 1, f"is out of range, got '{INT64_MAX + 1}'"))
    return [pytest.param(*case, id=f"{case[0]}.{case[1]}={case[2]!r}") for case in cases]


@pytest.mark.parametrize(("table", "name", "value", "message"), _boundaries())
def test_each_end_of_each_range(
    tmp_path: Path, table: str, name: str, value: float, message: str | None
) -> None:
    key = KEYS[table, name]
    path = write(tmp_path, render(key, value))
    if message is None:
        assert key.read(load_config(path)) == [value]
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {key.shown} {message}"


def test_an_item_past_the_range_is_named_by_its_place_in_the_list(tmp_path: Path) -> None:
    path = write(tmp_path, "[[publisher.relays]]\nalt_ports = [443, 8443, 70000]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = "[publisher.relays[0]] alt_ports[2] must be from 1 to 65535, got 70000"
    assert str(info.value) == f"{path}: {message}"
    path = write(tmp_path, "[sms.http]\nsuccess = [200, 99]\n")
    with pytest.raises(ConfigError, match=r"\[sms.http\] success\[1\] must be from 100 to 599"):
        load_config(path)


def test_a_relay_port_of_0_loads_and_the_publisher_calls_it_missing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[publisher.relays]]\nname = "a"\nserver = "relay.example.org"\n'
        f'key = "{"00" * 16}"\nport = 0\n',
    )
    config = load_config(path)
    with pytest.raises(ConfigError, match=r"\[\[publisher.relays\]\] #1 \('a'\): port is missing"):
        publisher_relays(config)


def test_the_example_config_keeps_to_every_range() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "config.example.toml")
    assert not config.publisher.relays  # the example's [[publisher.relays]] is a comment
    for name, key in KEYS.items():
        for number in [] if key.array else key.read(config):
            assert key.bounds is not None and number in key.bounds, (name, number)


NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([-1, 0, 1, 99, 100, 599, 600, 65535, 65536, 10_000_000, INT64_MAX]),
    st.floats(),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(KEYS)),
        st.lists(NUMBERS, min_size=1, max_size=3),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_any_number_loads_inside_its_range_or_is_a_config_error(
    written: dict[tuple[str, str], list[float]],
) -> None:
    tables: dict[str, list[str]] = {}
    for name, values in written.items():
        key = KEYS[name]
        line = (
            f"{key.key} = [{', '.join(map(repr, values))}]"
            if key.many
            else f"{key.key} = {values[0]!r}"
        )
        tables.setdefault(key.header, []).append(line)
    text = "".join(f"{header}\n" + "\n".join(lines) + "\n" for header, lines in tables.items())
    tomllib.loads(text)  # what we write is TOML: a failure here is the test's own
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), text)
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 500
            event("refused")
            return
    event("loaded")
    for name, values in written.items():
        key = KEYS[name]
        assert key.bounds is not None
        numbers = key.read(config)
        assert numbers == [key.kind(v) for v in (values if key.many else values[:1])]
        assert all(n in key.bounds for n in numbers)
        assert all(type(n) is key.kind for n in numbers)


def test_cli_refuses_a_port_past_65535_in_one_line_and_makes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "[sms.smpp]\nport = 99999\n")
    result = kopir("run", "-c", path, "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"kopir: {path}: [sms.smpp] port must be from 1 to 65535, got 99999\n"
    assert sorted(tmp_path.iterdir()) == [path]  # no data dir, keys or log
