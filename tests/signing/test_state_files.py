"""The signing package's own files on disk (``log.json``, ``lists.json``) and strict JSON.

A damaged or hostile file must be refused with a ``SigningError`` that names it, never with a
``TypeError``, ``OverflowError`` or ``RecursionError`` from deep inside, and never accepted as
values the code after it cannot use. The fuzz tests start from a valid file and break it the
ways a disk, an editor or an attacker would: values of another type, keys gone or added,
``NaN``/``Infinity``, numbers too large for a float or for ``int()``, deep nesting, lone
surrogates, truncation.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing import strictjson
from signing.canonical import canonical_json
from signing.errors import FormatError, SigningError
from signing.listdoc import ListState
from signing.logstore import LogError, LogStore

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

DEEP = "[" * 100_000 + "]" * 100_000

# --- a mutator of valid JSON files (also used by tests/kopir/test_state_files.py) ----------

# JSON text that json.loads reads but a state file must not hold, spliced in as raw text.
RAW_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" + "0" * 400,  # an int too large for a float
    "9" * 5000,  # more digits than int() converts
    '"\\ud800"',  # a lone surrogate
    '"a\\u0000b"',
    "[" * 40 + "]" * 40,  # deeper than strictjson.MAX_DEPTH
    "[" * 5000 + "]" * 5000,  # deeper than the recursion limit
    "{}",
    "[]",
    '""',
]
_PLACEHOLDER = "\ue000raw{}\ue000"

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (as a key path), the root included."""
    found = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += _paths(value, (*prefix, i))
    return found


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return obj


@st.composite
def mutated_json(draw: st.DrawFn, valid: Any) -> bytes:
    """``valid`` (a JSON value) after 1-3 structural edits and maybe a cut or a stray byte."""
    obj = copy.deepcopy(valid)
    raws: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(obj)))
        op = draw(st.sampled_from(["retype", "raw", "delete", "add", "wrap"]))
        if op == "retype":
            obj = _set(obj, path, draw(JSON_VALUES))
        elif op == "raw":
            raws.append(draw(st.sampled_from(RAW_TOKENS)))
            obj = _set(obj, path, _PLACEHOLDER.format(len(raws) - 1))
        elif op == "delete" and path:
            parent = obj
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
        elif op == "add":
            target = obj
            for step in path:
                target = target[step]
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(JSON_VALUES)
            elif isinstance(target, list):
                target.append(draw(JSON_VALUES))
        elif op == "wrap":
            target = obj
            for step in path:
                target = target[step]
            obj = _set(obj, path, [target])
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_PLACEHOLDER.format(i), ensure_ascii=False), raw)
        text = text.replace(json.dumps(_PLACEHOLDER.format(i)), raw)
    data = text.encode("utf-8", "surrogatepass")
    cut = draw(st.sampled_from(["none", "none", "truncate", "byte"]))
    if cut == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif cut == "byte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=2)) + data[at:]
    return data


# --- strictjson ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"NaN", "NaN is not allowed"),
        (b'{"a":[Infinity]}', "Infinity is not allowed"),
        (b"[-Infinity]", "-Infinity is not allowed"),
        (b"1e400", "too large"),
        (b"9" * 5000, "not valid JSON"),
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'["\\ud800"]', "lone surrogate"),
        (b"[" * 33 + b"]" * 33, "nested deeper than 32"),
        (DEEP.encode(), "nested deeper than 32"),
        (b"\xff", "not UTF-8"),
        (b"{", "not valid JSON"),
    ],
)
def test_strictjson_refuses_what_plain_json_lets_through(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message) as info:
        strictjson.loads(data)
    assert "\n" not in str(info.value)


def test_strictjson_reads_plain_json_in_any_layout() -> None:
    data = b'{\n  "b": [1, 2.5, "\\u00e9", null, true],\n  "a": {}\n}\n'
    assert strictjson.loads_object(data) == {"a": {}, "b": [1, 2.5, "é", None, True]}
    assert strictjson.loads(b"[" * 32 + b"]" * 32) is not None
    with pytest.raises(FormatError, match="expected a JSON object, got an array"):
        strictjson.loads_object(b"[]")


@FUZZ
@given(mutated_json({"a": [1, "x", {"b": None}], "c": 2.5}))
def test_fuzz_strictjson_refuses_only_with_format_error(data: bytes) -> None:
    try:
        obj = strictjson.loads(data)
    except FormatError as exc:
        assert "\n" not in str(exc)
        return
    canonical_json(obj)  # whatever it accepts is plain JSON again


# --- log.json ------------------------------------------------------------------------------

ORIGIN = "kopir.example/log"
VALID_META = {"key": "log.key", "origin": ORIGIN}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("log")
    LogStore.create(directory, ORIGIN)
    assert json.loads((directory / "log.json").read_bytes()) == VALID_META
    return directory


def write_meta(directory: Path, data: bytes) -> None:
    (directory / "log.json").write_bytes(data)
    for note in (directory / "checkpoints").glob("*.note"):
        note.unlink()  # a checkpoint of another origin would be refused for that reason


def use_log(directory: Path) -> LogStore:
    """Open the log and sign a checkpoint, as ``kopir log checkpoint`` does."""
    store = LogStore(directory)
    store.checkpoint()
    store.public_key()
    return store


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b'{"key":"log.key","origin":true}', "field 'origin' is not a string"),  # was TypeError
        (b'{"key":"log.key","origin":[null]}', "'origin' is not a string"),  # was AttributeError
        (DEEP.encode(), "nested deeper than 32"),  # was RecursionError
        (b'{"key":"log.key","origin":NaN}', "NaN is not allowed"),
        (b'{"key":"log.key","origin":"a b"}', "origin: key name 'a b' contains a space"),
        (b'{"key":"log.key","origin":"\\ud800"}', "lone surrogate"),
        (b'{"key":"a\\u0000b","origin":"o"}', "does not name the log's secret key"),  # ValueError
        (b'{"key":"/","origin":"o"}', "does not name the log's secret key"),  # was ValueError
        (b'{"key":"log.key"}', "field 'origin' is missing"),
        (b'{"key":"log.key","origin":"o","x":1}', "unknown field 'x'"),
        (b'["log.key"]', "expected a JSON object"),
    ],
)
def test_a_damaged_log_json_is_a_log_error_naming_it(
    log_dir: Path, meta: bytes, message: str
) -> None:
    write_meta(log_dir, meta)
    with pytest.raises(LogError) as info:
        use_log(log_dir)
    assert str(info.value).startswith(f"{log_dir / 'log.json'} is damaged: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_log_json_in_another_layout_still_opens(log_dir: Path) -> None:
    write_meta(log_dir, b'{\n  "origin": "kopir.example/log",\n  "key": "log.key"\n}\n')
    assert use_log(log_dir).origin == ORIGIN
    write_meta(log_dir, canonical_json(VALID_META))


@FUZZ
@given(mutated_json(VALID_META))
def test_fuzz_log_json_refuses_only_with_signing_error(log_dir: Path, data: bytes) -> None:
    write_meta(log_dir, data)
    try:
        store = use_log(log_dir)
    except SigningError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(store.origin, str) and store.key_path.name
    canonical_json({"origin": store.origin, "key": str(store.key_path)})


# --- lists.json (the verifier's memory) ----------------------------------------------------

DIGEST = hashlib.sha256(b"list").hexdigest()
VALID_LISTS = {"diaspora-ops": [3, DIGEST], "other": [1, DIGEST]}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (b'{"p":[Infinity,"x"]}', "Infinity is not allowed"),  # was OverflowError
        (DEEP.encode(), "nested deeper than 32"),  # was RecursionError
        (b'{"p":[1.5,"' + DIGEST.encode() + b'"]}', "the version is not a whole number"),
        (b'{"p":[true,"' + DIGEST.encode() + b'"]}', "the version is not a whole number"),
        (b'{"p":["7","' + DIGEST.encode() + b'"]}', "the version is not a whole number"),
        (b'{"p":[2,"x"]}', "the digest is not a lower-case SHA-256"),
        (b'{"p":[2,"' + DIGEST.encode() + b'",3]}', "is not a [version, sha256] pair"),
        (b'{"p":{}}', "is not a [version, sha256] pair"),
        (b"[]", "expected a JSON object"),
    ],
)
def test_a_damaged_lists_json_is_a_signing_error_naming_it(
    tmp_path: Path, state: bytes, message: str
) -> None:
    (tmp_path / "lists.json").write_bytes(state)
    with pytest.raises(SigningError) as info:
        ListState(tmp_path).last_seen("p")
    assert str(info.value).startswith(f"verifier state {tmp_path / 'lists.json'} is damaged: ")
    assert message in str(info.value)


def test_lists_json_as_written_reads_back(tmp_path: Path) -> None:
    (tmp_path / "lists.json").write_bytes(canonical_json(VALID_LISTS))
    state = ListState(tmp_path)
    assert state.last_seen("diaspora-ops") == (3, DIGEST)
    state.accept("diaspora-ops", 4, b"list v4")
    assert state.last_seen("diaspora-ops") == (4, hashlib.sha256(b"list v4").hexdigest())


@FUZZ
@given(mutated_json(VALID_LISTS))
def test_fuzz_lists_json_refuses_only_with_signing_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "lists.json").write_bytes(data)
    state = ListState(tmp_path)
    try:
        loaded = state.load()
    except SigningError as exc:
        assert "\n" not in str(exc)
        return
    for version, digest in loaded.values():
        assert isinstance(version, int) and not isinstance(version, bool) and version >= 1
        assert len(digest) == 64 and int(digest, 16) >= 0
    state.accept("diaspora-ops", 10**6, b"newer")  # what it read can be written back
