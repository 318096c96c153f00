"""Config loading: typed values, and one clear line (exit 2) for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kopir.config import ConfigError, Duration, load_config
from tests.cli import kopir

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_with_every_section() -> None:
    config = load_config(ROOT / "config.example.toml")
    assert config.signing.link_expiry == 72 * 3600
    assert config.signing.link_scheme == "tme"
    assert config.log.checkpoint_interval == 3600
    assert config.data_dir == ROOT / "data"


def test_defaults_when_empty(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.log.origin == "kopir.example/log"
    assert config.in_data(config.signing.key) == tmp_path / "data/keys/publisher.key"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[signing]\nkeyy = 'x'\n", "unknown key [signing] keyy; expected one of: key, "),
        ("[nosuch]\n", "unknown key nosuch"),
        (
            "[signing]\nlink_expiry = 5\n",
            '[signing] link_expiry must be a duration string like "72h"',
        ),
        ("[signing]\nlink_expiry = '5 weeks'\n", "[signing] link_expiry: expected a duration"),
        ("[signing]\nlink_scheme = 'http'\n", "[signing] link_scheme must be 'tme' or 'tg'"),
        ("[log]\norigin = 3\n", "[log] origin must be a string, got 3"),
        ("[data]\ndir = true\n", "[data] dir must be a path, got True"),
        ("signing = 1\n", "signing must be a table"),
        ("[log\n", "not valid TOML"),
        ("[[relay.secrets]]\nname = 'a'\n", "needs secret"),
    ],
)
def test_mistakes_name_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_config_errors_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[log]\ncheckpoint_interval = 60\n")
    result = kopir("run", "-c", path, "--once")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "[log] checkpoint_interval" in result.stderr
    missing = kopir("run", "-c", tmp_path / "nope.toml", "--once")
    assert missing.returncode == 2 and "config file not found" in missing.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("72h", 259200), ("7d", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert Duration.parse(text) == seconds


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_config_never_crashes(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as exc:
            assert "\n" not in str(exc).strip() or "TOML" in str(exc)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["data", "signing", "log", "extra"]),
        st.dictionaries(
            st.sampled_from(
                [
                    "dir",
                    "key",
                    "trust",
                    "link_expiry",
                    "link_scheme",
                    "origin",
                    "checkpoint_interval",
                    "bogus",
                ]
            ),
            st.one_of(
                st.integers(),
                st.text(max_size=10),
                st.booleans(),
                st.lists(st.integers(), max_size=2),
            ),
            max_size=4,
        ),
        max_size=3,
    )
)
def test_fuzz_config_values(tables: dict) -> None:
    import tempfile
    import tomllib

    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, str):
                rendered = '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
            else:
                rendered = repr(value)
            lines.append(f"{key} = {rendered}")
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError:
            return
    assert isinstance(config.signing.link_expiry, float) and config.signing.link_expiry > 0
    assert config.signing.link_scheme in ("tme", "tg")
    assert isinstance(config.log.origin, str)


def test_example_config_documents_every_key() -> None:
    import dataclasses

    from kopir.config import Config

    text = (ROOT / "config.example.toml").read_text()

    def walk(cls: type, section: str) -> list[tuple[str, str]]:
        keys = []
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            kind = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(kind):
                keys += walk(type(kind), f"{section}.{f.name}".strip("."))
            else:
                keys.append((section, f.name))
        return keys

    def documented(section: str, key: str) -> bool:
        table = f"{section}.{key}"
        forms = (f"\n{key} =", f"# {key} =", f"[{table}]", f"[[{table}]]")
        return any(form in text for form in forms)

    missing = [f"[{s}] {k}" for s, k in walk(Config, "") if not documented(s, k)]
    assert not missing, f"config.example.toml does not document: {missing}"
