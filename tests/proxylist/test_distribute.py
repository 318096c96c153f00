"""Per-recipient distribution: the keyed ring's properties, pools, the rate limit and the record.

The record tests use real SQLite files in a temporary directory; time is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sqlite3
import stat
import threading
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxylist.distribute import (
    COHORT_HEX,
    VNODES,
    Distributor,
    Ring,
    _field,
    _Keyed,
    _u64,
    check_pools,
    epoch_of,
)
from proxylist.distsecret import generate_secret, load_secret
from proxylist.errors import DistributionError, ProxylistError
from tests.strategies import mutated

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
RELAYS = [f"relay-{i:02d}" for i in range(50)]
DAY = 86400.0
T0 = 20_600 * 86400.0 + 3600  # one hour into a day-long epoch (May 2026)
PHONES = [f"+7701{i:07d}" for i in range(10_000)]

secrets_st = st.binary(min_size=16, max_size=80)
recipient_st = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


def _relays(n: int) -> list[str]:
    return [f"r{i}" for i in range(n)]


def _mean_deviation(counts: Counter[str], names: list[str], total: int) -> float:
    mean = total / len(names)
    return max(abs(counts[name] - mean) / mean for name in names)


# --- the keyed hash -----------------------------------------------------------------------


@given(key=st.binary(max_size=200), prefix=st.binary(max_size=80), data=st.binary(max_size=80))
def test_keyed_hash_is_hmac_sha256(key, prefix, data):
    """The fast path is RFC 2104 HMAC-SHA256 over prefix ‖ data, including keys over 64 bytes."""
    expected = hmac.new(key, prefix + data, hashlib.sha256).digest()
    assert _Keyed(key, prefix).digest(data) == expected


@given(secret=secrets_st, recipient=recipient_st, epoch=st.integers(0, 2**40))
def test_recipient_position_is_the_documented_hmac(secret, recipient, epoch):
    message = _field(b"kopir-distribution-recipient-v1") + _u64(epoch) + _field(recipient.encode())
    expected = int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8])
    assert Ring.build(secret, ["a"], epoch, vnodes=1).position(recipient) == expected


def test_relay_points_are_the_documented_hmac():
    ring = Ring.build(SECRET, ["b", "a"], 7, vnodes=3)
    expected = sorted(
        int.from_bytes(
            hmac.new(
                SECRET,
                _field(b"kopir-distribution-relay-v1")
                + _u64(7)
                + _field(name.encode())
                + v.to_bytes(4, "big"),
                hashlib.sha256,
            ).digest()[:8]
        )
        for name in ("a", "b")
        for v in range(3)
    )
    assert list(ring.positions) == expected
    assert ring.relays == ("a", "b") and sorted(Counter(ring.owners).values()) == [3, 3]


@given(
    a=st.tuples(recipient_st, st.integers(0, 2**40)),
    b=st.tuples(recipient_st, st.integers(0, 2**40)),
)
def test_recipient_messages_never_collide(a, b):
    """Length prefixes and the fixed-width epoch make (recipient, epoch) → bytes injective."""

    def message(recipient: str, epoch: int) -> bytes:
        return _field(b"kopir-distribution-recipient-v1") + _u64(epoch) + _field(recipient.encode())

    assert (message(*a) == message(*b)) == (a == b)


def test_cohort_is_keyed_truncated_and_label_separated(tmp_path):
    with (
        Distributor(tmp_path / "a.db", SECRET, {"new": RELAYS}) as one,
        Distributor(tmp_path / "b.db", OTHER_SECRET, {"new": RELAYS}) as other,
    ):
        cohort = one.cohort("+77011234567")
        assert len(cohort) == COHORT_HEX and int(cohort, 16) >= 0
        assert cohort != other.cohort("+77011234567")
        assert cohort != one.cohort("+77011234568")
        assert one.assign("+77011234567", "new", T0).cohort == cohort
    full = hmac.new(
        SECRET,
        _field(b"kopir-distribution-cohort-v1") + _field(b"+77011234567"),
        hashlib.sha256,
    ).hexdigest()
    assert cohort == full[:COHORT_HEX]


# --- the ring's properties -------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=secrets_st,
    n=st.integers(1, 12),
    k=st.integers(1, 5),
    recipients=st.lists(recipient_st, min_size=1, max_size=20),
    epoch=st.integers(0, 10**6),
)
def test_each_recipient_gets_k_distinct_relays_or_all_of_a_small_pool(
    secret, n, k, recipients, epoch
):
    names = _relays(n)
    ring = Ring.build(secret, names, epoch, vnodes=16)
    for recipient in recipients:
        got = ring.assign(recipient, k)
        assert len(got) == min(k, n)
        assert len(set(got)) == len(got)
        assert set(got) <= set(names)
    assert ring.assign_many(recipients, k) == [ring.assign(r, k) for r in recipients]


def test_a_pool_smaller_than_k_gives_everyone_all_its_relays():
    ring = Ring.build(SECRET, ["x", "y"], 3)
    assert {frozenset(ring.assign(p, 3)) for p in PHONES[:200]} == {frozenset({"x", "y"})}


def test_relays_are_nearest_first_on_the_ring():
    """The first relay owns the first ring point after the recipient, the second the next other."""
    ring = Ring.build(SECRET, RELAYS, 5, vnodes=8)
    for phone in PHONES[:100]:
        pos = ring.position(phone)
        after = [i for i, p in enumerate(ring.positions) if p > pos] or [0]
        order = [ring.relays[ring.owners[(after[0] + j) % len(ring.owners)]] for j in range(20)]
        assert ring.assign(phone, 2) == tuple(dict.fromkeys(order))[:2]


def test_an_empty_pool_is_a_clear_error(tmp_path):
    with pytest.raises(DistributionError, match="no healthy relays"):
        Ring.build(SECRET, [], 0).assign("+77011234567", 2)
    with (
        Distributor(tmp_path / "d.db", SECRET, {"established": RELAYS, "new": []}) as dist,
        pytest.raises(DistributionError, match="pool 'new' has no healthy relays"),
    ):
        dist.assign("+77011234567", "new", T0)


@settings(max_examples=20)
@given(secret=secrets_st, recipients=st.lists(recipient_st, min_size=1, max_size=20))
def test_stable_within_an_epoch(secret, recipients):
    epoch = epoch_of(T0, DAY)
    first = Ring.build(secret, RELAYS, epoch, vnodes=32).assign_many(recipients, 2)
    shuffled = list(reversed(RELAYS))
    again = Ring.build(secret, shuffled, epoch_of(T0 + DAY / 3, DAY), vnodes=32)
    assert again.assign_many(recipients, 2) == first


def test_stable_within_an_epoch_through_the_record(tmp_path):
    start = epoch_of(T0, DAY) * DAY
    with Distributor(tmp_path / "d.db", SECRET, {"new": RELAYS}, epoch_seconds=DAY) as dist:
        first = [dist.assign(p, "new", start).relays for p in PHONES[:50]]
        for now in (start + 1, start + DAY / 2, start + DAY - 1):
            assert [dist.assign(p, "new", now).relays for p in PHONES[:50]] == first


def test_rotates_across_epochs_for_most_recipients():
    epoch = epoch_of(T0, DAY)
    now = Ring.build(SECRET, RELAYS, epoch).assign_many(PHONES[:1000], 2)
    nxt = Ring.build(SECRET, RELAYS, epoch + 1).assign_many(PHONES[:1000], 2)
    changed = sum(set(a) != set(b) for a, b in zip(now, nxt, strict=True))
    assert changed >= 900  # independent draws: ~96% share no relay, 99.9% differ


def _load(secret: bytes) -> float:
    ring = Ring.build(secret, RELAYS, epoch_of(T0, DAY))
    counts = Counter(name for got in ring.assign_many(PHONES, 2) for name in got)
    return _mean_deviation(counts, RELAYS, 2 * len(PHONES))


def test_load_per_relay_is_within_30_percent_of_the_mean():
    assert _load(SECRET) <= 0.30


@settings(max_examples=8, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32))
def test_load_is_balanced_for_any_secret(secret):
    assert _load(secret) <= 0.30


def test_vnodes_are_what_balances_the_load():
    """With a single point per relay the arcs are wildly uneven; VNODES points fix that."""
    ring = Ring.build(SECRET, RELAYS, 1, vnodes=1)
    counts = Counter(name for got in ring.assign_many(PHONES, 2) for name in got)
    assert _mean_deviation(counts, RELAYS, 2 * len(PHONES)) > 0.30
    assert VNODES >= 100


def test_a_censor_with_20_ids_learns_at_most_40_of_50_relays(tmp_path):
    censor = [f"+7702999{i:04d}" for i in range(20)]
    ring = Ring.build(SECRET, RELAYS, epoch_of(T0, DAY))
    learned = {name for got in ring.assign_many(censor, 2) for name in got}
    assert len(learned) <= 20 * 2 < len(RELAYS)
    # Asking again, any number of times within the epoch and rate-limit interval, adds nothing.
    with Distributor(tmp_path / "d.db", SECRET, {"new": RELAYS}, epoch_seconds=DAY) as dist:
        for step in range(10):
            now = T0 + step * 600
            learned |= {name for a in dist.assign_many(censor, "new", now) for name in a.relays}
    assert len(learned) <= 40
    assert len(set(RELAYS) - learned) >= 10


@settings(max_examples=20)
@given(secret=secrets_st, other=secrets_st)
def test_changing_the_secret_changes_the_assignment(secret, other):
    if secret == other:
        return
    epoch = epoch_of(T0, DAY)
    one = Ring.build(secret, RELAYS, epoch, vnodes=16).assign_many(PHONES[:200], 2)
    two = Ring.build(other, RELAYS, epoch, vnodes=16).assign_many(PHONES[:200], 2)
    assert sum(a != b for a, b in zip(one, two, strict=True)) >= 150


# --- pools -----------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    split=st.integers(1, 49),
    recipients=st.lists(recipient_st, min_size=1, max_size=30, unique=True),
)
def test_established_and_new_pools_never_mix(tmp_path_factory, split, recipients):
    pools = {"established": RELAYS[:split], "new": RELAYS[split:]}
    path = tmp_path_factory.mktemp("pools") / "d.db"
    with Distributor(path, SECRET, pools, interval=0) as dist:
        for pool, members in pools.items():
            for now in (T0, T0 + 8 * 86400):
                for got in dist.assign_many(recipients, pool, now):
                    assert set(got.relays) <= set(members) and got.pool == pool


def test_a_relay_in_two_pools_is_refused(tmp_path):
    with pytest.raises(DistributionError, match="'relay-03' is in both pools"):
        check_pools({"established": RELAYS[:5], "new": RELAYS[3:8]})
    with Distributor(tmp_path / "d.db", SECRET, {"new": RELAYS[:5]}) as dist:
        with pytest.raises(DistributionError, match="in both pools"):
            dist.set_pools({"established": ["a"], "new": ["a"]})
        with pytest.raises(DistributionError, match="unknown pool 'old'; configured pools: new"):
            dist.assign("+77011234567", "old", T0)


def test_bad_relay_and_pool_names_are_refused():
    for bad in ({"new": ["a", "a"]}, {"new": [""]}, {"": ["a"]}, {"new": ["a\nb"]}):
        with pytest.raises(DistributionError):
            check_pools(bad)


# --- the rate limit ------------------------------------------------------------------------


def test_rate_limit_gives_one_new_set_per_interval(tmp_path):
    phone = "+77011234567"
    hour = 3600.0
    with Distributor(
        tmp_path / "d.db", SECRET, {"new": RELAYS}, epoch_seconds=10 * DAY, interval=DAY
    ) as dist:
        first = dist.assign(phone, "new", T0)
        assert not first.limited
        burned = first.relays[0]
        dist.set_pools({"new": [r for r in RELAYS if r != burned]})
        fresh = Ring.build(SECRET, [r for r in RELAYS if r != burned], first.epoch)
        assert fresh.assign(phone, 2) != first.relays
        # Within the interval: the previous set, burned relay and all.
        for now in (T0 + hour, T0 + DAY - 1):
            again = dist.assign(phone, "new", now)
            assert again.relays == first.relays and again.limited
        # Once the interval has passed since the last new set: the new set.
        later = dist.assign(phone, "new", T0 + DAY)
        assert later.relays == fresh.assign(phone, 2) and not later.limited
        assert burned not in later.relays


def test_rate_limit_spans_epochs_and_reopening(tmp_path):
    """A new epoch within the interval still gets the previous set, even after a restart."""
    phone, path = "tg:123456789", tmp_path / "d.db"

    def open_record() -> Distributor:
        pools = {"established": RELAYS}
        return Distributor(path, SECRET, pools, epoch_seconds=3600.0, interval=DAY)

    with open_record() as dist:
        first = dist.assign(phone, "established", T0)

    def fresh(now: float) -> tuple[str, ...]:
        return Ring.build(SECRET, RELAYS, epoch_of(now, 3600)).assign(phone, 2)

    assert fresh(T0 + 5 * 3600) != first.relays
    with open_record() as dist:
        again = dist.assign(phone, "established", T0 + 5 * 3600)
        assert again.relays == first.relays and again.limited
        later = dist.assign(phone, "established", T0 + DAY)
        assert later.relays == fresh(T0 + DAY) and not later.limited


def test_asking_often_does_not_extend_the_limit(tmp_path):
    """Repeated asks inside the interval don't reset its clock: it runs from the last new set."""
    phone = "+77019876543"
    with Distributor(
        tmp_path / "d.db", SECRET, {"new": RELAYS}, epoch_seconds=600.0, interval=3000.0
    ) as dist:
        first = dist.assign(phone, "new", T0)
        changed_at = None
        for step in range(1, 12):
            got = dist.assign(phone, "new", T0 + step * 600)
            if got.relays != first.relays:
                changed_at = step * 600
                break
        assert changed_at is not None and 3000 <= changed_at <= 3600


def test_a_pool_change_gets_the_new_pools_set_at_once(tmp_path):
    pools = {"established": RELAYS[:25], "new": RELAYS[25:]}
    with Distributor(tmp_path / "d.db", SECRET, pools, interval=DAY) as dist:
        dist.assign("+77011234567", "new", T0)
        moved = dist.assign("+77011234567", "established", T0 + 60)
        assert set(moved.relays) <= set(RELAYS[:25]) and not moved.limited


def test_batch_equals_one_by_one(tmp_path):
    recipients = PHONES[:300] + PHONES[:10]  # repeats inside one batch
    times = [T0, T0 + 3 * DAY, T0 + 8 * DAY]
    pools = {"new": RELAYS}
    with (
        Distributor(tmp_path / "a.db", SECRET, pools, epoch_seconds=DAY, interval=2 * DAY) as a,
        Distributor(tmp_path / "b.db", SECRET, pools, epoch_seconds=DAY, interval=2 * DAY) as b,
    ):
        for now in times:
            batch = a.assign_many(recipients, "new", now)
            single = [b.assign(r, "new", now) for r in recipients]
            assert batch == single
        assert a.exposed("relay-07") == b.exposed("relay-07")


# --- the record ------------------------------------------------------------------------------


def _clear_forms(recipient: str) -> list[bytes]:
    forms = [recipient.encode(), recipient.encode("utf-16-le")]
    digits = "".join(c for c in recipient if c.isdigit())
    if len(digits) >= 6:
        forms.append(digits.encode())
    return forms


def test_the_record_never_holds_a_clear_recipient_id(tmp_path):
    path = tmp_path / "d.db"
    recipients = PHONES[:500] + [f"tg:{10**9 + i}" for i in range(100)] + ["poster:2026-05-a"]
    with Distributor(path, SECRET, {"established": RELAYS[:20], "new": RELAYS[20:]}) as dist:
        dist.assign_many(recipients[:300], "established", T0)
        dist.assign_many(recipients[300:], "new", T0)
        for r in recipients[::7]:
            dist.assign(r, "new", T0 + 9 * DAY)
        files = [path, Path(f"{path}-wal")]
        assert files[1].stat().st_size > 0  # the check below must see the WAL, not an empty one
        _assert_no_clear_ids(files, recipients)
    _assert_no_clear_ids([p for p in tmp_path.iterdir() if p.is_file()], recipients)
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p


def _assert_no_clear_ids(files: list[Path], recipients: list[str]) -> None:
    blobs = [p.read_bytes() for p in files if p.exists()]
    assert blobs
    for recipient in recipients:
        for form in _clear_forms(recipient):
            assert not any(form in blob for blob in blobs), recipient


def test_exposed_finds_exactly_the_cohorts_that_got_a_relay(tmp_path):
    pools = {"established": RELAYS[:30], "new": RELAYS[30:]}
    with Distributor(tmp_path / "d.db", SECRET, pools, epoch_seconds=DAY, interval=0) as dist:
        expected: Counter[tuple[str, int, str]] = Counter()
        for now, pool, group in (
            (T0, "established", PHONES[:400]),
            (T0 + 60, "established", PHONES[:100]),  # asked twice: counted twice
            (T0 + 2 * DAY, "established", PHONES[:400]),  # another epoch: another entry
            (T0, "new", PHONES[400:700]),
        ):
            for got in dist.assign_many(group, pool, now):
                for relay in got.relays:
                    expected[relay, got.epoch, got.cohort] += 1
        for relay in ("relay-05", "relay-31", "relay-49"):
            report = dist.exposed(relay)
            found = Counter({(relay, e.epoch, e.cohort): e.count for e in report.entries})
            assert found == Counter({key: n for key, n in expected.items() if key[0] == relay})
            assert report.total == sum(found.values()) > 0
            cohorts = {cohort for (name, _, cohort) in expected if name == relay}
            assert set(report.cohorts) == cohorts
            assert len(report.epochs) == (2 if relay == "relay-05" else 1)
        assert dist.exposed("relay-99").entries == () and dist.exposed("relay-99").total == 0
        assert dist.exposed("relay-05").cohorts[0] in {dist.cohort(p) for p in PHONES[:400]}


def test_two_distributors_share_one_record(tmp_path):
    path = tmp_path / "d.db"
    with (
        Distributor(path, SECRET, {"new": RELAYS}, interval=DAY) as one,
        Distributor(path, SECRET, {"new": RELAYS[:10]}, interval=DAY) as two,
    ):
        first = one.assign("+77011234567", "new", T0)
        # The other process's view of health differs, but the limit is shared through the file.
        assert two.assign("+77011234567", "new", T0 + 60).relays == first.relays


def test_a_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    before = path.read_bytes()
    with pytest.raises(DistributionError, match="not a kopir distribution record"):
        Distributor(path, SECRET, {"new": RELAYS})
    assert path.read_bytes() == before  # refused before anything changed (no switch to WAL)
    with pytest.raises(DistributionError, match="cannot create distribution record"):
        Distributor(tmp_path / "missing" / "d.db", SECRET, {"new": RELAYS})


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(DistributionError, match="at least 16 are needed"):
        Distributor(tmp_path / "d.db", b"short", {"new": RELAYS})
    with pytest.raises(DistributionError, match="epoch length"):
        Distributor(tmp_path / "d.db", SECRET, {"new": RELAYS}, epoch_seconds=0)
    with pytest.raises(DistributionError, match="k must be"):
        Distributor(tmp_path / "d.db", SECRET, {"new": RELAYS}, k=0)
    with pytest.raises(DistributionError, match="not a Unix time"):
        epoch_of(float("nan"), DAY)
    with pytest.raises(DistributionError, match="recipient id must be"):
        Ring.build(SECRET, RELAYS, 0).assign("", 2)
    assert issubclass(DistributionError, ProxylistError)


@settings(max_examples=200)
@given(recipient=st.text(max_size=300))
def test_any_recipient_text_is_assigned_or_refused_clearly(recipient):
    ring = Ring.build(SECRET, RELAYS[:5], 0, vnodes=4)
    try:
        got = ring.assign(recipient, 2)
    except DistributionError as exc:
        assert "recipient id" in str(exc)
        assert (
            not recipient
            or len(recipient.encode("utf-8", "surrogatepass")) > 256
            or any(0xD800 <= ord(c) <= 0xDFFF for c in recipient)
        )
    else:
        assert len(got) == 2


# --- the secret file -------------------------------------------------------------------------


def test_secret_file_round_trip_and_mode(tmp_path):
    path = tmp_path / "distribution.key"
    generate_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = load_secret(path)
    assert len(secret) == 32
    with pytest.raises(DistributionError, match="never replaced"):
        generate_secret(path)
    assert load_secret(path) == secret
    os.chmod(path, 0o644)
    with pytest.raises(DistributionError, match="chmod 600"):
        load_secret(path)
    with pytest.raises(DistributionError, match="cannot read"):
        load_secret(tmp_path / "absent.key")


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=mutated(bytes(range(32)).hex() + "\n", special=list("0123456789abcdefABCDEF \n"))
    | st.text(max_size=100)
)
def test_secret_file_parser_never_accepts_garbage(tmp_path, text):
    path = tmp_path / "fuzz.key"
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as out:
        out.write(text)
    try:
        secret = load_secret(path)
    except DistributionError:
        return
    assert len(secret) >= 16
    assert re.fullmatch("[0-9a-fA-F]+", text.strip(" \t\r\n"))
    assert secret == bytes.fromhex(text.strip())


def test_many_first_opens_at_once_all_get_the_one_new_record(tmp_path):
    """Threads opening a record nobody has made yet: each sees an empty file or a whole record,
    never the half-made one that once read as "not a kopir distribution record"."""
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def open_and_assign(number: int) -> None:
        barrier.wait()
        try:
            with Distributor(tmp_path / "d.db", SECRET, {"new": RELAYS}) as dist:
                dist.assign(f"poster:{number}", "new", T0)
        except BaseException as exc:  # noqa: BLE001 - collected and shown below
            errors.append(exc)

    for _ in range(5):  # a fresh file each time: the race is in its creation
        (tmp_path / "d.db").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"d.db{suffix}").unlink(missing_ok=True)
        threads = [threading.Thread(target=open_and_assign, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors[:3]
