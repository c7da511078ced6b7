"""Deliberately broken copies of the core, to show that the formal tests notice them.

Two kinds of mutant:

* table mutants: a copy of ``TRANSITIONS`` (or of the machine's other
  arguments) with one change, built into a real ``transitions.Machine``;
* source mutants: a copy of a core module's source with one textual change,
  executed as a fresh module that never replaces the real one.
"""

from __future__ import annotations

import copy
import inspect
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from statemachine import framing, machine, proxy, session, text

# -- table mutants ---------------------------------------------------------------


@dataclass(frozen=True)
class TableMutant:
    """One change to the machine's declaration; ``killed_by`` names the checks that must notice it."""

    name: str
    change: Callable[[dict[str, Any]], None]  # edits a deep copy of MACHINE_KWARGS in place
    killed_by: frozenset[str] = field(default_factory=frozenset)

    def kwargs(self) -> dict[str, Any]:
        kwargs = copy.deepcopy(machine.MACHINE_KWARGS)
        self.change(kwargs)
        return kwargs


def _rule(kwargs: dict[str, Any], trigger: str) -> dict[str, Any]:
    return next(rule for rule in kwargs["transitions"] if rule["trigger"] == trigger)


def _drop(trigger: str) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        kwargs["transitions"].remove(_rule(kwargs, trigger))

    return change


def _redirect(trigger: str, dest: str) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        _rule(kwargs, trigger)["dest"] = dest

    return change


def _sources(trigger: str, sources: list[str]) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        _rule(kwargs, trigger)["source"] = sources

    return change


def _add(trigger: str, source: str, dest: str) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        kwargs["transitions"].append({"trigger": trigger, "source": source, "dest": dest})

    return change


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(kwargs: dict[str, Any]) -> None:
        kwargs[key] = value

    return change


def _no_way_out_of_closing(kwargs: dict[str, Any]) -> None:
    _drop("flushed")(kwargs)
    _sources("abort", ["CONNECTED", "ECHOING"])(kwargs)


DECLARATION, RUNTIME, GRAPH, SPIN = "declaration", "runtime", "graph", "spin"
_ALL = frozenset({DECLARATION, RUNTIME, SPIN})  # every mutant below is caught by these three

TABLE_MUTANTS = [
    TableMutant("drop flushed (CLOSING has only abort)", _drop("flushed"), _ALL),
    TableMutant("abort no longer leaves CLOSING", _sources("abort", ["CONNECTED", "ECHOING"]), _ALL),
    TableMutant("no way out of CLOSING", _no_way_out_of_closing, _ALL | {GRAPH}),
    TableMutant("disconnect -> ECHOING", _redirect("disconnect", "ECHOING"), _ALL),
    TableMutant("message -> CLOSING", _redirect("message", "CLOSING"), _ALL | {GRAPH}),
    TableMutant("message -> CONNECTED", _redirect("message", "CONNECTED"), _ALL | {GRAPH}),
    TableMutant("idle_timeout -> CLOSED (no flush)", _redirect("idle_timeout", "CLOSED"), _ALL),
    TableMutant("line_timeout -> ECHOING", _redirect("line_timeout", "ECHOING"), _ALL),
    TableMutant("abort -> CLOSING", _redirect("abort", "CLOSING"), _ALL),
    TableMutant("flushed -> CLOSING", _redirect("flushed", "CLOSING"), _ALL),
    TableMutant("message accepted in CLOSING", _add("message", "CLOSING", "CLOSING"), _ALL),
    TableMutant("CLOSED is left: message reopens", _add("message", "CLOSED", "ECHOING"), _ALL | {GRAPH}),
    TableMutant("initial state ECHOING", _set("initial", "ECHOING"), _ALL | {GRAPH}),
    TableMutant("automatic to_<state> triggers", _set("auto_transitions", True), _ALL | {GRAPH}),
    TableMutant("handshake_done -> ECHOING", _redirect("handshake_done", "ECHOING"), _ALL),
    TableMutant("handshake_failed -> CLOSING (a FIN, no close)", _redirect("handshake_failed", "CLOSING"), _ALL),
    TableMutant(
        "abort no longer leaves HANDSHAKE", _sources("abort", ["CONNECTED", "ECHOING", "CLOSING", "PROXY_HEADER"]), _ALL
    ),
    TableMutant("proxy_header -> ECHOING", _redirect("proxy_header", "ECHOING"), _ALL),
    TableMutant(
        "proxy_rejected -> CLOSING (a refused header is answered)", _redirect("proxy_rejected", "CLOSING"), _ALL
    ),
    TableMutant(
        "abort no longer leaves PROXY_HEADER", _sources("abort", ["CONNECTED", "ECHOING", "CLOSING", "HANDSHAKE"]), _ALL
    ),
    TableMutant("drop proxy_header (no way into the session)", _drop("proxy_header"), _ALL),
    TableMutant("message accepted in PROXY_HEADER", _add("message", "PROXY_HEADER", "ECHOING"), _ALL),
]


def build(mutant: TableMutant) -> Any:
    """The mutant as a real machine, built the way machine.py builds the shared one."""
    return machine.Machine(model=None, **mutant.kwargs())


# -- source mutants --------------------------------------------------------------


def mutated_module(module: ModuleType, replacements: list[tuple[str, str]], **extra: object) -> ModuleType:
    """A fresh copy of ``module`` with each ``old`` text replaced by ``new``; ``extra`` names are predefined."""
    source = inspect.getsource(module)
    for old, new in replacements:
        if old not in source:
            raise LookupError(f"mutation target {old!r} is no longer in {module.__name__}: update the mutant")
        source = source.replace(old, new)
    mutant = ModuleType(f"{module.__name__}_mutant")
    mutant.__dict__.update(extra)
    sys.modules[mutant.__name__] = mutant  # dataclasses look their module up while the class is made
    try:
        exec(compile(source, f"<mutant of {module.__name__}>", "exec"), mutant.__dict__)
    finally:
        del sys.modules[mutant.__name__]
    return mutant


def session_with(replacements: list[tuple[str, str]] = (), framer: ModuleType | None = None, **names: object):
    """A mutant of statemachine.session; ``framer`` swaps in a mutant framing module, ``names`` override globals."""
    mutant = mutated_module(session, list(replacements), **names)
    if framer is not None:
        for name in ("LineFramer", "LineTooLong", "split_block"):
            setattr(mutant, name, getattr(framer, name))
    for name, value in names.items():
        setattr(mutant, name, value)  # after exec: replaces what the module imported
    return mutant


_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


@dataclass(frozen=True)
class SourceMutant:
    name: str
    rule: str
    make: Callable[[], ModuleType]
    killed_by: frozenset[str]


SOURCE_MUTANTS = [
    SourceMutant(
        "upper-case ASCII only",
        "L2",
        lambda: session_with([(".upper()", ".translate(_ASCII_UPPER)")], _ASCII_UPPER=_ASCII_UPPER),
        frozenset({"framing_invariance", "echoes_have_no_lower_case", "all_of_unicode_echoes"}),
    ),
    SourceMutant(
        "reply loses the CR of CRLF (the word's and raw path)",
        "L2",
        lambda: session_with([("return reply.encode() + terminator", "return reply.encode() + terminator[-1:]")]),
        frozenset({"framing_invariance", "disconnect_variants_close"}),
    ),
    SourceMutant(
        "an invalid line's error loses the CR of CRLF (block path)",
        "L5/L8",
        lambda: session_with([("lasts += lasts & ", "lasts += 0 & ")]),
        frozenset({"framing_invariance"}),
    ),
    SourceMutant(
        "an invalid line's mark leaves the LF before it (block path)",
        "L5",
        lambda: session_with([("landed * 0xFF", "landed * 0")]),
        frozenset({"framing_invariance"}),
    ),
    SourceMutant(
        "an invalid line's bytes stay beside its mark (block path)",
        "L5",
        lambda: session_with([("crossed = (content ^ backward) & content", "crossed = 0")]),
        frozenset({"framing_invariance"}),
    ),
    SourceMutant(
        "the disconnect search stops at an invalid line's mark (block path)",
        "L4/L5",
        lambda: session_with(
            find_disconnect_line=mutated_module(
                text, [('INVALID_CR_MARK + INVALID_MARK + "]"', '"]"')]
            ).find_disconnect_line
        ),
        frozenset({"disconnect_variants_close"}),
    ),
    SourceMutant(
        "echo strips spaces (every path)",
        "L2",
        lambda: session_with([("reply = text.upper()", "reply = text.strip().upper()")]),
        frozenset({"framing_invariance", "echoes_have_no_lower_case"}),
    ),
    SourceMutant(
        "disconnect word case-sensitive",
        "L4",
        lambda: session_with(is_disconnect=lambda t: t.strip() == "DESCONEXION"),
        frozenset({"disconnect_variants_close", "disconnect_is_exactly_the_rule"}),
    ),
    SourceMutant(
        "disconnect word without accent folding",
        "L4",
        lambda: session_with(is_disconnect=lambda t: t.strip().casefold() == "desconexion"),
        frozenset({"disconnect_variants_close", "disconnect_is_exactly_the_rule"}),
    ),
    SourceMutant(
        "disconnect word not stripped",
        "L4",
        lambda: session_with(is_disconnect=lambda t: text.fold(t) == "desconexion"),
        frozenset({"disconnect_variants_close", "disconnect_is_exactly_the_rule"}),
    ),
    SourceMutant(
        "disconnect word found inside a longer text",
        "L4",
        lambda: session_with(is_disconnect=lambda t: "desconexion" in text.fold(t)),
        frozenset({"near_misses_stay_open", "disconnect_is_exactly_the_rule"}),
    ),
    SourceMutant(
        "pre-filter hides the word (fast path)",
        "L4",
        lambda: session_with(find_disconnect=lambda t: -1),
        frozenset({"disconnect_variants_close", "disconnect_is_exactly_the_rule"}),
    ),
    SourceMutant(
        "framer ignores a held partial line when a read ends in LF",
        "L3",
        lambda: session_with(
            framer=mutated_module(framing, [("if not partial and data[-1:] == LF", "if data[-1:] == LF")])
        ),
        frozenset({"framing_invariance"}),
    ),
    SourceMutant(
        "framer refuses max_line + CR before its LF arrives",
        "L3/L6",
        lambda: session_with(
            framer=mutated_module(
                framing,
                [
                    (
                        "if over > 1 or (over == 1 and partial[-1] != 0x0D):",
                        "if over > 0:",
                    )
                ],
            )
        ),
        frozenset({"framing_invariance"}),
    ),
    SourceMutant(
        "raw reads do not hold an unfinished character",
        "R4",
        lambda: session_with([("cut = incomplete_tail(data)", "cut = 0")]),
        frozenset({"raw_split_characters_wait", "raw_reads_are_messages"}),
    ),
    SourceMutant(
        "framer answers a last message of max_line + CR at end of stream",
        "L6/L7",
        lambda: session_with(framer=mutated_module(framing, [("if len(rest) > self.max_line:", "if False:")])),
        frozenset({"framing_invariance"}),
    ),
    SourceMutant(
        "raw reads hold bytes no character starts with",
        "R4/L5",
        lambda: session_with(
            incomplete_tail=mutated_module(
                text, [("if not low <= data[end - back + 1] <= high:", "if False:")]
            ).incomplete_tail
        ),
        frozenset({"raw_reads_are_messages"}),
    ),
    SourceMutant(
        "every byte restarts the message deadline",
        "L14",
        lambda: session_with([("elif block or self.line_started is None:", "else:")]),
        frozenset({"line_deadline"}),
    ),
    SourceMutant(
        "a message begun after a complete line keeps the old deadline",
        "L14",
        lambda: session_with([("elif block or self.line_started is None:", "elif self.line_started is None:")]),
        frozenset({"line_deadline"}),
    ),
    SourceMutant(
        "raw replies get a newline",
        "R2",
        lambda: session_with([('return self._reply_line(data, b"")', "return self._reply_line(data, LF)")]),
        frozenset({"raw_split_characters_wait", "raw_reads_are_messages"}),
    ),
    SourceMutant(
        "end of stream during the TLS handshake leaves it waiting",
        "O6",
        lambda: session_with(
            [("self.eof = True\n        if self.state == HANDSHAKE:", "self.eof = True\n        if False:")]
        ),
        frozenset({"handshake_outcomes"}),
    ),
    SourceMutant(
        "the idle clock starts at the accept, not at the end of the handshake",
        "O6/L9",
        lambda: session_with(
            [('fire(self, "handshake_done")\n        self.last_input = now', 'fire(self, "handshake_done")')]
        ),
        frozenset({"handshake_outcomes"}),
    ),
    SourceMutant(
        "the handshake deadline is never checked",
        "O6",
        lambda: session_with([("if deadline is None or now < deadline:\n            return False", "return False")]),
        frozenset({"handshake_outcomes"}),
    ),
    SourceMutant(
        "the bytes after the PROXY header are lost",
        "O2",
        lambda: session_with([('return self.receive(rest, now) if rest else b""', 'return b""')]),
        frozenset({"proxy_session_phase"}),
    ),
    SourceMutant(
        "no PROXY header: the input is read as messages (a server that guesses)",
        "O2",
        lambda: session_with(
            [
                (
                    'self._reject_header(exc.reason)\n            return b""\n        if header is None:',
                    "self._proxy = None\n            self.state = CONNECTED\n            return self.receive(data, now)"
                    "\n        if header is None:",
                )
            ]
        ),
        frozenset({"proxy_session_phase"}),
    ),
]


def proxy_with(replacements: list[tuple[str, str]]) -> ModuleType:
    """A mutant of statemachine.proxy, the PROXY header parser."""
    return mutated_module(proxy, replacements)


_SPLIT, _TRUNCATED, _CORRUPTED = "proxy_split_invariance", "proxy_truncations_rejected", "proxy_corruptions_rejected"

PROXY_MUTANTS = [
    SourceMutant(
        "v1 numbers with leading zeros",
        "O2",
        lambda: proxy_with([('(text == "0" or text[0] != "0")', "True")]),
        frozenset({_CORRUPTED}),
    ),
    SourceMutant(
        "v1 line ended by LF alone",
        "O2",
        lambda: proxy_with([("if i == 0 or line[i - 1] != 0x0D:", "if False:")]),
        frozenset({_CORRUPTED}),
    ),
    SourceMutant(
        "v1 lines up to 200 bytes",
        "O2",
        lambda: proxy_with([("V1_MAX = 107", "V1_MAX = 200")]),
        frozenset({_CORRUPTED}),
    ),
    SourceMutant(
        "v2 TLVs not checked",
        "O2",
        lambda: proxy_with([("    _check_tlvs(block[2 * size + 4 :])\n", "")]),
        frozenset({_CORRUPTED}),
    ),
    SourceMutant(
        "v2 any version", "O2", lambda: proxy_with([("if held[12] >> 4 != 2:", "if False:")]), frozenset({_CORRUPTED})
    ),
    SourceMutant(
        "v2 length not capped",
        "O2",
        lambda: proxy_with([("if length > V2_MAX_LENGTH:", "if False:")]),
        frozenset({_CORRUPTED}),
    ),
    SourceMutant(
        "leftover loses a byte",
        "O2",
        lambda: proxy_with([("self.leftover = held[end:]", "self.leftover = held[end + 1 :]")]),
        frozenset({_SPLIT, _CORRUPTED}),
    ),
    SourceMutant(
        "a cut header is accepted at end of stream",
        "O2",
        lambda: proxy_with(
            [('        raise ProxyRejected("end of stream inside the PROXY header")', "        return")]
        ),
        frozenset({_TRUNCATED, _CORRUPTED}),
    ),
]
