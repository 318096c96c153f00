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


def test_a_config_that_is_not_a_file_keeps_data_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-c /dev/null`` made /dev/data (keys and all): [data] dir was taken against /dev."""
    monkeypatch.chdir(tmp_path)
    assert load_config(Path("/dev/null")).data_dir == tmp_path / "data"
    result = kopir("run", "-c", "/dev/null", "--once", cwd=tmp_path)
    assert result.returncode == 2 and "no relays to probe" in result.stderr
    assert (tmp_path / "data/keys/publisher.key").stat().st_mode & 0o777 == 0o600
    moved = tmp_path / "moved.toml"
    moved.write_text("")
    config = load_config(moved)
    moved.unlink()  # a file loaded once keeps its folder, even if it goes away later
    assert config.data_dir == tmp_path / "data"


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


# --- numbers too large, not finite, or nested too deeply ------------------------------------

HUGE = "9" * 320  # more digits than a float holds (1e309 and up overflow)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # was OverflowError from float(int * unit)
        (f'[signing]\nlink_expiry = "{HUGE}s"\n', "[signing] link_expiry: a duration is at most"),
        (f'[log]\ncheckpoint_interval = "{HUGE}d"\n', "[log] checkpoint_interval: a duration"),
        ('[signing]\nlink_expiry = "36501d"\n', "a duration is at most 36500d, got '36501d'"),
        ('[signing]\nlink_expiry = "00000s"\n', "expected a duration"),
        (f"[sms.smpp]\nthroughput = {HUGE}\n", "[sms.smpp] throughput is out of range"),
        ("[sms.smpp]\nthroughput = nan\n", "[sms.smpp] throughput must be a finite number"),
        ("[sms.smpp]\nthroughput = inf\n", "[sms.smpp] throughput must be a finite number"),
        ("[sms.smpp]\nthroughput = 1e400\n", "[sms.smpp] throughput must be a finite number"),
        (f"[relay]\nmask_port = 1{'0' * 30}\n", "[relay] mask_port is out of range"),
        (f"[relay]\nmask_port = {'9' * 5000}\n", "not valid TOML: Exceeds the limit"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML: arrays or tables nested"),
    ],
)
def test_huge_and_odd_numbers_are_config_errors_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 500


def test_durations_up_to_a_hundred_years_still_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[signing]\nlink_expiry = "0036500d"\n'))
    assert config.signing.link_expiry == 36500 * 86400
    config = load_config(write(tmp_path, "[sms.smpp]\nthroughput = 12.5\n"))
    assert config.sms.smpp.throughput == 12.5


def test_cli_reports_a_huge_duration_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[log]\ncheckpoint_interval = "{HUGE}s"\n')
    result = kopir("run", "-c", path, "--once")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "[log] checkpoint_interval" in result.stderr


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    st.from_regex(r"[0-9]{1,400}[smhd]", fullmatch=True)
    | st.integers(min_value=0).map(lambda n: f"{n}{'smhd'[n % 4]}")
)
def test_fuzz_durations_are_sane_or_refused(text: str) -> None:
    try:
        seconds = Duration.parse(text)
    except ValueError as exc:
        assert len(str(exc)) < 200
        return
    assert 0 < seconds <= 36500 * 86400
