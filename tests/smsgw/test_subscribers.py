"""smsgw.subscribers: the encrypted subscriber store, its import, and what it must never leak."""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw import subscribers
from smsgw.errors import KeyFileError, SmsError, SubscriberError
from smsgw.numbers import NumberKey, normalize
from smsgw.subscribers import Subscriber, SubscriberStore

NOW = 1_767_400_000.0
KZ_MOBILE_PREFIXES = ("700", "701", "702", "705", "707", "708", "747", "771", "775", "777", "778")


@pytest.fixture
def key() -> NumberKey:
    return NumberKey(os.urandom(32))


@pytest.fixture
def store(tmp_path: Path, key: NumberKey):
    with SubscriberStore(tmp_path / "subscribers.db", key) as store:
        yield store


def store_bytes(path: Path) -> bytes:
    """The database file and its -wal and -shm companions, as a seizure would find them."""
    return b"".join(
        p.read_bytes() for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name)
    )


def kz_numbers(count: int, seed: int) -> list[str]:
    """Distinct valid Kazakh mobile numbers in national digits, e.g. ``7012345678``."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        found.add(f"{rng.choice(KZ_MOBILE_PREFIXES)}{rng.randrange(10**7):07d}")
    return sorted(found)


# -- adding, reading, removing -------------------------------------------------------------------


def test_add_and_get(store: SubscriberStore, key: NumberKey) -> None:
    ref = store.add("8 701 234 56 78", "RU", " New ", "  web-form 2026-01-03 ", NOW)
    assert ref == key.ref("+77012345678")
    sub = store.get(ref)
    assert sub == Subscriber(
        ref, "+77012345678", "ru", "new", "web-form 2026-01-03", int(NOW), None
    )
    assert store.count() == 1


def test_add_again_updates_in_place(store: SubscriberStore) -> None:
    ref = store.add("+7 (701) 234-56-78", "kk", "established", "paper form", NOW)
    again = store.add("87012345678", "en", "new", "web-form", NOW + 50)
    assert again == ref
    sub = store.get(ref)
    # language and consent follow the new sign-up; the pool never drops from established
    assert (sub.language, sub.pool, sub.consent, sub.created) == (
        "en",
        "established",
        "web-form",
        int(NOW),
    )
    assert store.count() == 1


@pytest.mark.parametrize(
    ("language", "pool", "consent", "says"),
    [
        ("fr", "new", "web", "unknown language 'fr' (use kk, ru, en)"),
        ("+77012345678", "new", "web", "unknown language (value not shown) (use kk, ru, en)"),
        ("ru", "old", "web", "unknown pool 'old' (use established, new)"),
        ("ru", "new", "  \n ", "consent must say where it was given"),
    ],
)
def test_add_refuses_bad_fields(store, language, pool, consent, says) -> None:
    with pytest.raises(SubscriberError) as info:
        store.add("+77012345678", language, pool, consent, NOW)
    assert says in str(info.value)
    assert store.count() == 0


def test_consent_is_stripped_and_capped(store: SubscriberStore) -> None:
    ref = store.add("+77012345678", "ru", "new", "  web\nform\t" + "x" * 500, NOW)
    consent = store.get(ref).consent
    assert consent.startswith("web form x") and len(consent) == subscribers.MAX_CONSENT_CHARS


def test_add_invalid_number(store: SubscriberStore) -> None:
    with pytest.raises(SubscriberError, match=r"not a valid phone number \(too short\)"):
        store.add("8 701 234", "ru", "new", "web", NOW)


def test_remove_by_number_or_ref(store: SubscriberStore) -> None:
    ref = store.add("+77012345678", "ru", "new", "web", NOW)
    other = store.add("+77779876543", "kk", "new", "web", NOW)
    assert store.remove("8 701 234 56 78") is True
    assert store.remove("+77012345678") is False
    assert store.remove(other) is True
    assert store.remove(other) is False
    assert store.remove("8 7172 12 34 56") is False  # a fixed line: never stored, still no error
    assert store.count() == 0
    with pytest.raises(SubscriberError, match=f"no subscriber with ref {ref[:12]}$"):
        store.get(ref)
    with pytest.raises(SubscriberError, match="not a phone number"):
        store.remove("STOP")


def test_remove_leaves_no_copy_of_the_record(store: SubscriberStore, tmp_path: Path) -> None:
    """secure_delete zeroes the record; the log checkpoint drops the older page images."""
    ref = store.add("+77012345678", "ru", "new", "web", NOW)
    store.add("+77779876543", "kk", "new", "web", NOW)
    blob = store._db.execute("SELECT number_ct FROM subscriber WHERE ref = ?", (ref,)).fetchone()[0]
    assert blob in store_bytes(tmp_path / "subscribers.db")
    assert store.remove(ref)
    data = store_bytes(tmp_path / "subscribers.db")
    assert blob not in data and ref.encode() not in data


def test_mark_sent(store: SubscriberStore) -> None:
    ref = store.add("+77012345678", "ru", "new", "web", NOW)
    assert store.mark_sent(ref, NOW + 60.7) is True
    assert store.get(ref).last_sent == int(NOW + 60)
    store.remove(ref)
    assert store.mark_sent(ref, NOW + 120) is False


def test_mark_sent_many_in_one_go(store: SubscriberStore) -> None:
    refs = [store.add(f"+7701234567{i}", "kk", "established", "web", NOW) for i in range(5)]
    store.remove(refs[0])
    assert store.mark_sent_many(refs, NOW + 90) == 4
    assert [store.get(r).last_sent for r in refs[1:]] == [int(NOW + 90)] * 4
    with pytest.raises(SubscriberError, match="not a subscriber ref"):
        store.mark_sent_many(["+77012345678"], NOW)


def test_get_refuses_what_is_not_a_ref(store: SubscriberStore) -> None:
    for wrong in ("+77012345678", "87012345678", "A" * 64, ""):
        with pytest.raises(SubscriberError, match="not a subscriber ref") as info:
            store.get(wrong)
        assert "7012345678" not in str(info.value)


def test_counts_and_iteration(store: SubscriberStore, monkeypatch) -> None:
    monkeypatch.setattr(subscribers, "BATCH_ROWS", 7)  # iterate across several pages
    numbers = kz_numbers(30, seed=1)
    for i, number in enumerate(numbers):
        store.add(number, ("kk", "ru", "en")[i % 3], ("established", "new")[i % 2], "web", NOW)
    assert store.count() == 30
    assert store.count_by("language") == {"en": 10, "kk": 10, "ru": 10}
    assert store.count_by("pool") == {"established": 15, "new": 15}
    assert store.count_by("consent") == {"web": 30}
    subs = list(store.iter_all())
    assert sorted(s.number for s in subs) == sorted(normalize(n) for n in numbers)
    assert [s.ref for s in subs] == sorted(s.ref for s in subs)
    with pytest.raises(SubscriberError, match="cannot count by 'number'"):
        store.count_by("number")
    with pytest.raises(SubscriberError, match=r"cannot count by \(value not shown\)"):
        store.count_by("ref; DROP TABLE subscriber")


def test_empty_store(store: SubscriberStore) -> None:
    assert store.count() == 0
    assert store.count_by("pool") == {}
    assert list(store.iter_all()) == []
    assert store.purge() == 0


# -- the file ------------------------------------------------------------------------------------


def test_reopen_with_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    master = os.urandom(32)
    with SubscriberStore(path, NumberKey(master)) as store:
        ref = store.add("+77012345678", "ru", "new", "web", NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with SubscriberStore(path, NumberKey(master)) as store:
        assert store.get(ref).number == "+77012345678"


def test_wrong_key_fails_clearly_and_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.db"
    master = os.urandom(32)
    with SubscriberStore(path, NumberKey(master)) as store:
        store.add("+77012345678", "ru", "new", "web", NOW)
    before = path.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyFileError) as info:
        SubscriberStore(path, NumberKey(os.urandom(32)))
    assert str(info.value) == (
        f"the subscriber key does not open {path}: it was created with another key file "
        "(nothing was changed; use the key file the store was made with)"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    with SubscriberStore(path, NumberKey(master)) as store:
        assert store.count() == 1


def test_other_files_are_refused_and_left_alone(tmp_path: Path, key: NumberKey) -> None:
    other = tmp_path / "queue.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE message (id INTEGER PRIMARY KEY)")
    db.close()
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"these are not the droids\n" * 100)
    for path in (other, garbage):
        before = path.read_bytes()
        with pytest.raises(SubscriberError, match=str(path)):
            SubscriberStore(path, key)
        assert path.read_bytes() == before
    with pytest.raises(SubscriberError, match="cannot create subscriber store"):
        SubscriberStore(tmp_path / "missing" / "subscribers.db", key)


def test_purge_leaves_no_old_bytes(tmp_path: Path, key: NumberKey) -> None:
    path = tmp_path / "subscribers.db"
    with SubscriberStore(path, key) as store:
        refs = [store.add(n, "ru", "new", "web", NOW) for n in kz_numbers(300, seed=2)]
        rows = store._db.execute("SELECT number_ct FROM subscriber").fetchall()
        blobs = [row[0] for row in rows]
        assert all(blob in store_bytes(path) for blob in blobs[:5])
        assert store.purge() == 300
        assert store.count() == 0
        data = store_bytes(path)
        assert not [blob for blob in blobs if blob in data]
        assert not [ref for ref in refs if ref[:16].encode() in data]
        store.add("+77012345678", "ru", "new", "web", NOW)  # still usable afterwards
        assert store.count() == 1


# -- CSV import ----------------------------------------------------------------------------------

CSV = """\ufeffnumber,language,pool
8 701 234 56 78,kk,established
+7 (777) 987-65-43
"8 (747) 123-45-67",EN,

# a comment line
8 701 234,ru
+7 7172 12 34 56,ru,new
77012345678,ru,new,extra
+77080001122,fr
+77051112233,ru,old
+7 701 ABC 56 78
8 701 234 56 78,ru
"""


def test_import_csv(store: SubscriberStore, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(CSV, encoding="utf-8")
    store.add("+77779876543", "kk", "established", "paper", NOW - 100)
    report = store.import_csv(path, "ru", "new", "import 2026-01-03", NOW, ProgressLog())
    assert report.bad == (
        (7, "not a valid phone number (too short)"),
        (8, "cannot receive SMS (a fixed-line number)"),
        (9, "too many columns (expected number[,language[,pool]])"),
        (10, "unknown language 'fr' (use kk, ru, en)"),
        (11, "unknown pool 'old' (use established, new)"),
        (12, "not a valid phone number (contains letters)"),
    )
    assert str(report.bad[0]) == "line 7: not a valid phone number (too short)"
    assert (report.rows, report.added, report.updated, report.rejected) == (10, 2, 2, 6)
    subs = {s.number: s for s in store.iter_all()}
    assert sorted(subs) == ["+77012345678", "+77471234567", "+77779876543"]
    assert (subs["+77012345678"].language, subs["+77012345678"].pool) == ("ru", "established")
    assert (subs["+77779876543"].language, subs["+77779876543"].pool) == ("ru", "established")
    assert subs["+77779876543"].created == int(NOW - 100)
    assert (subs["+77471234567"].language, subs["+77471234567"].consent) == (
        "en",
        "import 2026-01-03",
    )


class ProgressLog(list[tuple[int, int]]):
    """A progress callback that remembers its calls."""

    def __call__(self, done: int, total: int) -> None:
        self.append((done, total))


def test_import_progress_is_reported(store: SubscriberStore, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(subscribers, "BATCH_ROWS", 10)
    numbers = kz_numbers(45, seed=3)
    path = tmp_path / "list.csv"
    path.write_text("\n".join(numbers), encoding="utf-8")  # no header, no final newline
    calls = ProgressLog()
    report = store.import_csv(path, "kk", "new", "import", NOW, calls)
    assert report.added == 45 and report.rejected == 0
    assert calls[0] == (0, 45) and calls[-1] == (45, 45)
    assert [done for done, _ in calls] == [0, 10, 20, 30, 40, 45, 45]
    assert all(total == 45 for _, total in calls)


def test_import_semicolons_and_tabs(store: SubscriberStore, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("Номер;Язык\n8 701 234 56 78;kk\n8 777 987 65 43;\n", encoding="utf-8")
    assert store.import_csv(path, "ru", "new", "import", NOW).added == 2
    path.write_text("+77471234567\ten\testablished\n", encoding="utf-8")
    report = store.import_csv(path, "ru", "new", "import", NOW)
    assert report.added == 1 and store.count_by("pool") == {"established": 1, "new": 2}


def test_import_is_all_or_nothing(store: SubscriberStore, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(subscribers, "BATCH_ROWS", 10)
    path = tmp_path / "list.csv"
    path.write_text("\n".join(kz_numbers(50, seed=4)) + "\n", encoding="utf-8")

    def interrupted(done: int, total: int) -> None:
        if done >= 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.import_csv(path, "ru", "new", "import", NOW, interrupted)
    assert store.count() == 0
    assert store.import_csv(path, "ru", "new", "import", NOW).added == 50


def test_import_refuses_bad_arguments_and_files(store: SubscriberStore, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("+77012345678\n", encoding="utf-8")
    with pytest.raises(SubscriberError, match="unknown language"):
        store.import_csv(path, "de", "new", "import", NOW)
    with pytest.raises(SubscriberError, match="unknown pool"):
        store.import_csv(path, "ru", "all", "import", NOW)
    with pytest.raises(SubscriberError, match="consent"):
        store.import_csv(path, "ru", "new", " ", NOW)
    with pytest.raises(SubscriberError, match="cannot read"):
        store.import_csv(tmp_path / "missing.csv", "ru", "new", "import", NOW)
    assert store.count() == 0


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from('0123456789+78 ()-,;\t"\n#abcкз\x00\ufeff'), max_size=300))
def test_import_arbitrary_text_never_crashes(text: str) -> None:
    key = NumberKey(bytes(32))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.csv"
        path.write_text(text, encoding="utf-8")
        with SubscriberStore(Path(tmp) / "s.db", key) as store:
            try:
                report = store.import_csv(path, "ru", "new", "fuzz", NOW)
            except SubscriberError:
                return
            assert report.rows == report.added + report.updated + report.rejected
            assert store.count() == report.added
            for line, reason in report.bad:
                assert 1 <= line <= text.count("\n") + 1
                assert not re.search(r"\d{4}", reason)


# -- privacy -------------------------------------------------------------------------------------


def forms(national: str) -> list[bytes]:
    """Every way a Kazakh mobile number could be spelled in a file: E.164 and national digits."""
    return [
        f"+7{national}".encode(),
        national.encode(),
        f"8{national}".encode(),
        f"7{national}".encode(),
    ]


def test_no_number_in_the_file_the_logs_errors_or_reprs(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "subscribers.db"
    key = NumberKey(os.urandom(32))
    added, imported, refused = kz_numbers(200, 5)[:200], kz_numbers(220, 6), kz_numbers(40, 7)
    imported = [n for n in imported if n not in added][:150]
    refused = [n for n in refused if n not in added and n not in imported][:20]
    messages: list[str] = []
    spellings = (
        lambda n: f"8 {n[:3]} {n[3:6]} {n[6:8]} {n[8:]}",
        lambda n: f"+7 ({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}",
        lambda n: f"7{n}",
        lambda n: f"8{n}",
        lambda n: n,
    )

    with SubscriberStore(path, key) as store:
        for i, national in enumerate(added):
            store.add(spellings[i % len(spellings)](national), "ru", "new", "web", NOW)
        csv_path = tmp_path / "import.csv"
        lines = ["number,language,pool"] + [f"8{n},kk,established" for n in imported]
        lines += [f"8{n}9" for n in refused[:10]]  # too long
        lines += [f"+7{n},xx" for n in refused[10:15]]  # bad language
        lines += [f"+7{n},ru,new,+7{n}" for n in refused[15:]]  # too many columns
        csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        report = store.import_csv(csv_path, "ru", "new", "import", NOW)
        assert (report.added, report.rejected) == (150, 20)
        messages += [str(bad) for bad in report.bad] + [repr(report), repr(store), repr(key)]

        for call in (
            lambda: store.get(f"+7{added[0]}"),
            lambda: store.add(f"+7{added[1]}", f"+7{added[2]}", "new", "web", NOW),
            lambda: store.add(f"+7{added[3]}", "ru", f"8{added[4]}", "web", NOW),
            lambda: store.add(f"8{refused[0]}9", "ru", "new", "web", NOW),
            lambda: store.count_by(f"+7{added[5]}"),
            lambda: normalize(f"+7 {refused[1]} ext 5"),
        ):
            with pytest.raises(SmsError) as info:
                call()
            messages.append(str(info.value))
        subs = list(store.iter_all())
        assert len(subs) == 350
        messages += [repr(sub) for sub in subs] + [str(sub) for sub in subs]
        assert (tmp_path / "subscribers.db-wal").stat().st_size > 0  # the scan covers the log
        file_bytes = store_bytes(path)
        store.remove(f"+7{added[0]}")
        file_bytes += store_bytes(path)

    assert caplog.records, "the store should have logged something to check"
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    text = "\n".join(messages) + logged
    for national in added + imported + refused:
        for form in forms(national):
            assert form not in file_bytes, f"{form!r} found in the database files"
            assert form.decode() not in text, f"{form!r} found in a log line, error or repr"


def test_signing_up_again_never_demotes_an_established_subscriber(tmp_path: Path) -> None:
    from smsgw.numbers import create_key_file
    from smsgw.subscribers import SubscriberStore

    key = create_key_file(tmp_path / "k.key")
    with SubscriberStore(tmp_path / "s.db", key) as store:
        ref = store.add("+77012345678", "kk", "established", "pre-crisis list", 1.0)
        store.add("8 701 234 56 78", "ru", "new", "web form", 2.0)
        assert store.get(ref).pool == "established" and store.get(ref).language == "ru"
        other = store.add("+77012345679", "kk", "new", "web form", 1.0)
        store.add("+77012345679", "kk", "established", "operator list", 2.0)
        assert store.get(other).pool == "established"
