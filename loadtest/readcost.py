"""What one 64 KiB read costs the server's core, by content (L16).

A worker handles a whole read before it serves anyone else, so the cost of the
costliest read a client can send is how long it can make everyone wait.  This
module times :meth:`statemachine.session.Session.receive` on one read of each
kind of content a client might choose to be expensive, against plain ASCII,
with and without the logging hook (the per-message path the server takes at
the ``info`` log level).  ``python -m loadtest.readcost`` prints the table;
the bench's W6 reports the same figures.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

from statemachine.session import Limits, Session

READ_SIZE = 65536


def _fill(line: bytes, size: int = READ_SIZE) -> bytes:
    """As many copies of ``line`` as fit in one read."""
    return line * (size // len(line))


def _invalid_pairs() -> list[bytes]:
    """Every two-byte line that is not UTF-8 (no LF in it), with its LF."""
    pairs = (bytes((first, second)) for first in range(256) for second in range(256) if 0x0A not in (first, second))
    return [pair + b"\n" for pair in pairs if not _is_utf8(pair)]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


#: name -> one read's worth of that content (whole lines, so that nothing is held).
CONTENTS: dict[str, bytes] = {
    "ascii a\\n": _fill(b"a\n"),
    "ascii x\\n": _fill(b"x\n"),
    "ña\\n": _fill("ña\n".encode()),
    "ñx\\n": _fill("ñx\n".encode()),
    "\\xff\\n": _fill(b"\xff\n"),
    "\\xff\\r\\n": _fill(b"\xff\r\n"),
    "valid and invalid lines": _fill("ña\n".encode() + b"\xff\n"),
    "ñ\\xffx\\n": _fill("ñ".encode() + b"\xffx\n"),
    "encoded surrogate": _fill(b"\xed\xa0\x80\n"),
    "control characters": _fill(b"\x00\x1b[2K\x7f\n"),
    "many CRs": _fill(b"\r\r\r\r\r\r\r\n"),
    "CRLF lines": _fill(b"\r\n"),
    "near misses of the word": _fill("desconexió\n".encode()),
    # every letter of the word and one more: long enough to be searched, and searched to its end
    "near misses of the word, one letter more": _fill("desconexiónn\n".encode()),
    "accented word pieces": _fill("dëscönëxï\n".encode()),
    # a character beyond the Basic Multilingual Plane makes the disconnect search take its slower pattern
    "near misses, one emoji": "😀\n".encode() + _fill("desconexió\n".encode(), READ_SIZE - 5),
    "emoji with x": _fill("😀x\n".encode()),
    # a combining mark beyond the plane after each letter (the last range of such marks, once the
    # costliest to tell from other characters there)
    "near misses, marks beyond the plane": _fill(("".join(c + "\U0001e944" for c in "desconexió") + "\n").encode()),
    "ŉ (upper case grows)": _fill("ŉ\n".encode()),
    "ΐ (upper case x3)": _fill("ΐ\n".encode()),
    "one 64 KiB line": b"a" * (READ_SIZE - 1) + b"\n",
    "one invalid line of CRs": b"\xff" + b"\r" * (READ_SIZE - 2) + b"\n",
    "one 64 KiB ñx line": _fill("ñx".encode(), READ_SIZE - 2) + b"\n",
    "empty lines": _fill(b"\n"),
    "distinct invalid lines": b"".join(bytes((0xFF, 0x20 + i % 90, 0x20 + i // 90 % 90, 0x0A)) for i in range(16384)),
    # as many lines as a read holds, all invalid and all different: two bytes and an LF each
    "distinct invalid 3-byte lines": b"".join(_invalid_pairs()[: READ_SIZE // 3]),
    "distinct valid lines, one invalid": b"\xff\n"
    + b"".join(f"ñ{i:05d}\n".encode() for i in range((READ_SIZE - 2) // 8)),
    # invalid lines that never neighbour each other, so each is found and replaced on its own
    "invalid lines, LF and CRLF in turn": _fill(b"\xff\n\xff\r\n"),
    "ASCII and invalid lines in turn": _fill(b"a\n\xff\n"),
    "invalid and empty lines in turn": _fill(b"\xff\n\n"),
    "x and an invalid byte": _fill(b"x\x80\n"),
    # One line with an x makes the disconnect search look at every line; lines that begin like the
    # word go a step further into the pattern, and invalid ones must cost no search at all.
    "D lines, one ñx": _fill(b"D\n", READ_SIZE - 4) + "ñx\n".encode(),
    "empty lines, one ñx": _fill(b"\n", READ_SIZE - 4) + "ñx\n".encode(),
    "invalid lines, one x": _fill(b"\xff\n", READ_SIZE - 2) + b"x\n",
    "D, an invalid byte and x": _fill(b"D\xffx\n"),
    "D lines and invalid lines in turn, one x": _fill(b"D\n\xff\n", READ_SIZE - 2) + b"x\n",
    "tab lines and invalid lines in turn, one x": _fill(b"\t\n\xff\n", READ_SIZE - 2) + b"x\n",
    "near misses and invalid lines in turn": _fill("desconexiónn\n".encode() + b"\xff\n"),
    "x, an invalid byte and CRLF": _fill(b"x\xff\r\n"),
}
BASELINE = "ascii a\\n"


def _session(hooked: bool) -> Session:
    hook: Callable[[str, str], None] | None = (lambda text, reply: None) if hooked else None
    return Session(Limits(idle_timeout=0, line_timeout=0), 0.0, hook)


def read_costs(hooked: bool = False, number: int = 3, rounds: int = 25) -> dict[str, float]:
    """Seconds per 64 KiB read, for every content in :data:`CONTENTS`.

    Timed in the CPU time of the thread doing the work, not by the wall clock,
    so other processes on a shared machine do not count; and the contents take
    turns, round after round, each keeping its best round, so what load still
    shows through (caches, frequency) spoils a round of each, not all of one
    content's.
    """
    sessions = {name: _session(hooked) for name in CONTENTS}
    for name, data in CONTENTS.items():
        if not sessions[name].receive(data, 0.0) or not sessions[name].is_open:
            raise ValueError(f"{name}: the content must be whole lines that keep the session open")
    best = dict.fromkeys(CONTENTS, float("inf"))
    for _ in range(rounds):
        for name, data in CONTENTS.items():
            receive = sessions[name].receive
            seconds = timeit.timeit(lambda: receive(data, 0.0), timer=time.thread_time, number=number) / number  # noqa: B023
            best[name] = min(best[name], seconds)
    return best


def costliest(costs: dict[str, float]) -> tuple[str, float]:
    """The costliest content and its cost as a multiple of plain ASCII."""
    name = max(costs, key=costs.__getitem__)
    return name, costs[name] / costs[BASELINE]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.readcost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=3, help="reads per timing (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=25, help="timings; the best is kept (default %(default)s)")
    args = parser.parse_args(argv)
    plain, hooked = read_costs(False, args.number, args.rounds), read_costs(True, args.number, args.rounds)
    width = max(map(len, CONTENTS))
    print(f"{'content (one 64 KiB read)':<{width}} {'no hook ms':>10} {'x ASCII':>8} {'hook ms':>9} {'x ASCII':>8}")
    for name in CONTENTS:
        print(
            f"{name:<{width}} {plain[name] * 1e3:>10.3f} {plain[name] / plain[BASELINE]:>8.1f}"
            f" {hooked[name] * 1e3:>9.3f} {hooked[name] / hooked[BASELINE]:>8.1f}"
        )
    for label, costs in (("no hook", plain), ("hook", hooked)):
        name, ratio = costliest(costs)
        print(f"costliest ({label}): {name}, {ratio:.1f} x plain ASCII")


if __name__ == "__main__":
    main()
