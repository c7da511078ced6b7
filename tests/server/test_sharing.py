"""The shared session table of ``--processes`` (L10, L15, O1), without a server.

Each "process" here is a view of one table (:meth:`SharedLimit.for_slot`),
as each forked process holds one; the table is held to a plain dict model.
Tiny tables make every address collide with others, so probing, runs that
wrap round the end, and deletion from the middle of a run are all exercised.
"""

from __future__ import annotations

import array
import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import sharing
from server.sharing import BUSY, PER_ADDRESS, SharedLimit, pack_address, unpack_address

_POOL = ["127.0.0.1", "127.0.0.2", "10.0.0.7", "::1", "2001:db8::5", "::ffff:127.0.0.1", "203.0.113.9", "fe80::2"]


class Model:
    """What the table must say: per slot, the sessions it holds (each with its address or None)."""

    def __init__(self, total: int, per_address: int, processes: int) -> None:
        self.total = total
        self.per_address = per_address
        self.held: list[list[str | None]] = [[] for _ in range(processes)]

    def count(self, address: str) -> int:
        return sum(held.count(address) for held in self.held)

    def take(self, slot: int, address: str | None) -> str | None:
        if sum(map(len, self.held)) >= self.total:
            return BUSY
        if address is not None and self.count(address) >= self.per_address:
            return PER_ADDRESS
        self.held[slot].append(address)
        return None

    def by_address(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for slot, held in enumerate(self.held):
            for address in held:
                if address is not None:
                    found.setdefault(unpack_address(pack_address(address)), [0] * len(self.held))[slot] += 1
        return found


def _agree(table: SharedLimit, model: Model) -> None:
    assert table.open_now() == [len(held) for held in model.held]
    assert table.by_address() == model.by_address()  # the records
    index = table._addresses
    if not index._words[sharing._DIRTY]:  # the index, unless a crash left it for the next holder to rebuild
        for address in _POOL:
            assert index.count(pack_address(address)) == model.count(address), address


_STEP = st.one_of(
    st.tuples(st.just("take"), st.integers(0, 2), st.sampled_from([*_POOL, None])),
    st.tuples(st.just("claim"), st.integers(0, 2), st.sampled_from(_POOL)),
    st.tuples(st.just("release"), st.integers(0, 2), st.integers(0, 50)),
    st.tuples(st.just("forget"), st.integers(0, 2), st.just(None)),
    st.tuples(st.just("crash"), st.integers(0, 2), st.integers(0, 2**32)),
)


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(1, 7),
    per_address=st.integers(1, 4),
    steps=st.lists(_STEP, max_size=80),
)
def test_the_table_agrees_with_a_dict_at_every_step(total, per_address, steps):
    table = SharedLimit(total, 3, per_address)
    views = [table.for_slot(slot) for slot in range(3)]
    model = Model(total, per_address, 3)
    for what, slot, arg in steps:
        view, held = views[slot], model.held[slot]
        if what == "take":
            assert view.take(arg) == model.take(slot, arg)
        elif what == "claim":  # a session taken before its address was known (PROXY)
            anonymous = [i for i, address in enumerate(held) if address is None]
            if not anonymous:
                continue
            allowed = model.count(arg) < per_address
            assert view.claim(arg) is allowed
            if allowed:
                held[anonymous[0]] = arg
        elif what == "release":
            if not held:
                continue
            view.release(held.pop(arg % len(held)))
        elif what == "forget":  # the process died; the supervisor forgets it and starts another
            table.forget(slot)
            held.clear()
            views[slot] = table.for_slot(slot)
        else:  # the lock holder died mid-change: the index and free stack are garbage, the records whole
            _scribble(table, arg)
        _agree(table, model)


def _scribble(table: SharedLimit, seed: int) -> None:
    """What a process killed mid-change may leave: a free record half written, the index and free stack anyhow."""
    addresses = table._addresses
    words = addresses._words
    for record in range(addresses.records):
        at = sharing._HEADER + sharing._RECORD * record
        if words[at] == 0:  # the address goes in before the owner: a free record may hold any address
            words[at + 1 : at + 4] = memoryview(array.array("Q", pack_address(_POOL[seed % len(_POOL)])))
            break
    start = sharing._HEADER + sharing._RECORD * addresses.records
    for i, offset in enumerate(range(start, len(words))):
        words[offset] = (seed * (i + 1) * 2654435761) % (addresses.records + 3)
    words[sharing._FREE_TOP] = seed % (addresses.records + 1)
    words[sharing._DIRTY] = 1


def _colliding(table: SharedLimit, count: int) -> list[str]:
    """``count`` addresses whose probes start at the same cell of ``table``'s index."""
    by_home: dict[int, list[str]] = {}
    for i in itertools.count(1):
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        same = by_home.setdefault(table._addresses._home(pack_address(address)), [])
        same.append(address)
        if len(same) == count:
            return same
    raise AssertionError("unreachable")


@pytest.mark.parametrize("removed", [0, 1, 2])
def test_removing_one_of_a_run_of_collisions_keeps_the_others_found(removed):
    table = SharedLimit(total=64, processes=2, per_address=2)
    first, second = table.for_slot(0), table.for_slot(1)
    run = _colliding(table, 3)
    for address in run:
        assert first.take(address) is None
        assert second.take(address) is None
        assert first.take(address) == PER_ADDRESS  # two each, over both processes
    first.release(run[removed])
    second.release(run[removed])  # its last session: its cell is emptied, the run closed up behind it
    assert table.by_address() == {address: [1, 1] for address in run if address != run[removed]}
    for address in run:  # the others first: taking the removed one again would refill the emptied cell
        if address != run[removed]:
            assert first.take(address) == PER_ADDRESS
    assert first.take(run[removed]) is None


def test_a_full_table_refuses_only_as_busy_and_takes_again_once_one_ends():
    table = SharedLimit(total=4, processes=2, per_address=1)
    first, second = table.for_slot(0), table.for_slot(1)
    addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
    for i, address in enumerate(addresses):
        assert (first if i % 2 else second).take(address) is None
    assert first.take("192.0.2.9") == BUSY  # every record in use: the total, not the address, refuses
    assert first.take("192.0.2.1") == BUSY
    first.release("192.0.2.4")
    assert second.take("192.0.2.1") == PER_ADDRESS
    assert second.take("192.0.2.9") is None


def test_a_long_churn_of_new_addresses_never_clogs_the_index():
    """Deletion leaves no tombstones: thousands of addresses through a table of eight cells."""
    table = SharedLimit(total=4, processes=2, per_address=1)
    views = [table.for_slot(0), table.for_slot(1)]
    live = ["198.51.100.1", "198.51.100.2"]
    for i, address in enumerate(live):
        assert views[i % 2].take(address) is None
    for i in range(4, 3000):
        address = f"2001:db8::{i:x}"
        assert views[i % 2].take(address) is None
        assert views[i % 2].take(address) == PER_ADDRESS
        views[i % 2].release(address)
    assert table.by_address() == {"198.51.100.1": [1, 0], "198.51.100.2": [0, 1]}
    assert table.open_now() == [1, 1]


def test_addresses_are_kept_exactly_not_by_a_hash():
    assert pack_address("::ffff:127.0.0.1") != pack_address("127.0.0.1")  # as the single process keys them
    for address in _POOL:
        assert ipaddress.ip_address(unpack_address(pack_address(address))) == ipaddress.ip_address(address)
    assert pack_address("not an address")[0] == 0
