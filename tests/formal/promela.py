"""Generate a Promela model of one connection from the session machine's declaration.

The model has three processes: a ``Client`` that sends messages, the
disconnect word, an over-long line, a half-close, a message it never finishes
(trickling, L14) or a reset in any order; the
server's ``Session`` for that connection; and an ``Operator`` who may send
SIGTERM.  Two channels stand for the two directions of the TCP connection.
The server may start the session in any entry state the options allow: with
``tls``, in HANDSHAKE (O6): the handshake's bytes are the TLS layer's, so the
model chooses among its outcomes (done; failed by bad bytes or the deadline;
the client's end of stream or the operator's shutdown meanwhile; a reset), and
a failed handshake closes the connection with nothing sent; with ``proxy``, in
PROXY_HEADER (O2), and the client may send a valid header first, or anything
else, or nothing until the header deadline; and always in CONNECTED.

What is generated and what is written by hand:

* the states, the triggers and the ``fire`` table come from
  :mod:`statemachine.machine` (``STATES``, ``table()``): one Promela branch per
  declared ``(state, trigger) -> dest``, and an ``assert(false)`` for every
  other pair, so reaching an undeclared pair is a model-checking error;
* which trigger each event causes, and what is sent in reply, is the template
  below, written from SPEC L4-L13 and from what ``statemachine/session.py`` and
  ``server/worker.py`` do.  ``fire`` is called from exactly one place, so
  spin's "unreached" report names every declared transition the model never
  takes.

Kept small on purpose: two messages, channels of a few slots, and a reply
channel bound that makes the server stop reading (L12) before it is full.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from string import Template

# The states the template below tests and the triggers it fires (the server's events).
TEMPLATE_STATES = frozenset({"CONNECTED", "ECHOING", "CLOSING", "CLOSED", "HANDSHAKE", "PROXY_HEADER"})
TEMPLATE_TRIGGERS = frozenset(
    {
        "message",
        "disconnect",
        "end_of_stream",
        "line_too_long",
        "idle_timeout",
        "line_timeout",
        "shutdown",
        "flushed",
        "abort",
        "handshake_done",
        "handshake_failed",
        "proxy_header",
        "proxy_rejected",
    }
)

_HEADER = Template(
    """\
/* upperecho: one connection, generated from statemachine/machine.py by tests/formal/promela.py.
 * Regenerate rather than edit: the states and the fire() table are the declaration's. */

#define NMSG $nmsg         /* ordinary messages a client sends at most */
#define IDLE $idle         /* L9: 1 when the idle timeout is on */
#define TLS $tls          /* O6: 1 when the session starts with the TLS handshake */
#define PROXY $proxy        /* O2: 1 when the server may run with the PROXY protocol on */
#define LINE $line         /* L14: 1 when the message deadline is on */
#define BOUND 2        /* L12: the server stops reading while this many lines wait for the client */
#define SLOTS (NMSG + 3)  /* room for every line the server can ever send, so it never blocks writing */

/* states, from STATES */
$state_defines
/* triggers, from the declared events */
$trigger_defines
#define NONE 255

/* client -> server: a message, the disconnect word (L4), an over-long line (L6), a half-close (L7),
   a valid PROXY header (O2; any other first bytes are not one),
 * the first bytes of a message the client then trickles and never finishes (L14) */
/* server -> client: the reply to a message, an error line of the server's own (L8), the close (FIN) */
mtype = { MSG, BYE, LONG, HALFCLOSE, HEADER, PART, REPLY, NOTICE, FIN };

chan c2s = [2] of { mtype, byte };     /* the kind and the message's number */
chan s2c = [SLOTS] of { mtype, byte };

byte state = $initial;
byte reason = NONE;         /* the trigger that ended the open part of the session */
byte answered = 0;          /* replies the session has sent (the disconnect word's included) */
byte sent_before_halfclose = 0;
bool client_reset = false;  /* the client sent a reset (RST) */
bool server_reset = false;  /* the session aborted, or its handshake failed: the client sees the connection end */
bool stop = false;          /* SIGTERM reached the server (L11) */
bool unfinished = false;    /* the session holds part of a message (its deadline runs, L14) */
bool fin_sent = false;      /* the session shut down its sending side */
bool resets;                /* chosen at the start: this client may reset the connection */
bool walks;                 /* chosen at the start: this client may walk away (only with IDLE) */
bool proxy_on = false;      /* chosen at the start: the server expects a PROXY header (O2) */
bool header_read = false;   /* the session read a valid PROXY header */
bool rejected = false;      /* the session refused the header and closed with nothing sent */

inline fire(t) {
  if
$fire_branches
  :: else -> assert(false)  /* an undeclared (state, trigger) pair */
  fi
}
"""
)

_BODY = """
/* The server's side of the connection (statemachine/session.py + server/worker.py). */
proctype Session() {
  byte trig, seq;
  do
  :: state == CLOSED ->
     assert(fin_sent || server_reset || rejected);  /* the client is never left hanging: a FIN or a reset */
     break
  :: else ->
     atomic {
       if
       :: state == PROXY_HEADER ->
          /* O2: nothing is answered here; anything but a valid header is refused */
          if
          :: client_reset -> trig = abort
          :: c2s?[HEADER] -> c2s?HEADER(seq); trig = proxy_header
          :: c2s?[MSG] -> c2s?MSG(seq); trig = proxy_rejected
          :: c2s?[BYE] -> c2s?BYE(seq); trig = proxy_rejected
          :: c2s?[LONG] -> c2s?LONG(seq); trig = proxy_rejected
          :: c2s?[HALFCLOSE] -> c2s?HALFCLOSE(seq); trig = proxy_rejected  /* end of stream first */
          :: c2s?[PART] -> c2s?PART(seq); trig = proxy_rejected
          :: true -> trig = proxy_rejected                     /* the header deadline passed */
          :: stop && empty(c2s) -> trig = proxy_rejected       /* L11 with no header read */
          fi;
          reason = trig
       :: state == CONNECTED || state == ECHOING ->
          if
          :: client_reset -> trig = abort
          :: len(s2c) < BOUND && c2s?[MSG] -> c2s?MSG(seq); s2c!REPLY(seq); answered++; trig = message
          :: len(s2c) < BOUND && c2s?[BYE] -> c2s?BYE(seq); s2c!REPLY(seq); answered++; trig = disconnect
          :: len(s2c) < BOUND && c2s?[LONG] -> c2s?LONG(seq); s2c!NOTICE(0); trig = line_too_long
          :: len(s2c) < BOUND && c2s?[HALFCLOSE] -> c2s?HALFCLOSE(seq); trig = end_of_stream
          /* bytes of an unfinished message: no trigger, but its deadline starts */
          :: len(s2c) < BOUND && c2s?[PART] -> c2s?PART(seq); unfinished = true; trig = NONE
          /* L14: the unfinished message's deadline passed, however many of its bytes still trickle in */
          :: LINE && unfinished -> s2c!NOTICE(0); trig = line_timeout
          /* L9: no byte read for the idle time: nothing to read, or reading paused (L12) */
          :: IDLE && (empty(c2s) || len(s2c) >= BOUND) -> s2c!NOTICE(0); trig = idle_timeout
          /* L11: every message already received is answered first, unless reading is paused */
          :: stop && (empty(c2s) || len(s2c) >= BOUND) -> s2c!NOTICE(0); trig = shutdown
          fi;
          if
          :: trig != NONE -> reason = trig
          :: else -> skip
          fi
       :: state == HANDSHAKE ->
          /* O6: the handshake's bytes are the TLS layer's; only its outcome is the session's */
          if
          :: client_reset -> trig = abort
          :: true -> trig = handshake_done
          :: true -> trig = handshake_failed   /* bad bytes, plain text, or the deadline passed */
          :: c2s?[HALFCLOSE] -> c2s?HALFCLOSE(seq); trig = handshake_failed  /* end of stream */
          :: stop -> trig = handshake_failed   /* shutdown (L11) */
          fi;
          reason = trig
       :: state == CLOSING ->
          if
          :: client_reset -> trig = abort
          /* every reply handed to the network, then FIN (L13); nothing may follow it */
          :: s2c!FIN(0) -> assert(!fin_sent && !server_reset); fin_sent = true; trig = flushed
          :: true -> trig = abort          /* the drain time passed first (the client does not read) */
          fi
       fi;
       if
       :: trig != NONE -> fire(trig)
       :: else -> skip
       fi;
       /* what the open states mean: CONNECTED has answered nothing yet, ECHOING has */
       assert(state != CONNECTED || answered == 0);
       assert(state != ECHOING || answered > 0);
       if
       :: trig == abort -> server_reset = true
       :: trig == handshake_failed -> server_reset = true  /* closed with nothing sent */
       :: trig == proxy_rejected -> rejected = true
       :: trig == proxy_header -> header_read = true
       :: else -> skip
       fi
     }
  od
}

/* A client doing anything a TCP client can, in any order, reading concurrently. */
proctype Client() {
  byte sent = 0, got = 0, bye = NONE, seq;
  bool halfclosed = false, ended = false;  /* ended: a closing line (the disconnect reply or a notice) came */
  bool headered = false;
  bool trickling = false;  /* sent the start of a message it never finishes: sends nothing else */
  do
  :: proxy_on && !headered && sent == 0 && !halfclosed && !trickling && nfull(c2s) -> c2s!HEADER(0); headered = true
  :: !halfclosed && !trickling && sent < NMSG && nfull(c2s) -> c2s!MSG(sent); sent++
  :: !halfclosed && !trickling && bye == NONE && nfull(c2s) -> c2s!BYE(sent); bye = sent; sent++
  :: !halfclosed && !trickling && nfull(c2s) -> c2s!LONG(sent)
  :: !halfclosed && !trickling && nfull(c2s) -> c2s!HALFCLOSE(0); sent_before_halfclose = sent; halfclosed = true
  :: !halfclosed && !trickling && nfull(c2s) -> c2s!PART(sent); trickling = true
  :: s2c?REPLY(seq) ->
     assert(!proxy_on || header_read);  /* O2: nothing is sent before a valid header */
     assert(!ended);        /* nothing but the close after a closing line */
     assert(seq == got);    /* L3: one reply per message, in order, none lost */
     got++;
     ended = (seq == bye)
  :: s2c?NOTICE(seq) -> assert(!proxy_on || header_read); assert(!ended); ended = true
  :: s2c?FIN(seq) ->
     assert(ended || halfclosed);             /* only a closing line or a half-close leads to the close */
     assert(got == answered);                 /* every reply sent arrived before the close */
     assert(reason != end_of_stream || got == sent_before_halfclose);  /* L7 */
     assert(reason != disconnect || got == bye + 1);                    /* L4 */
     break
  :: server_reset -> break
  :: rejected -> assert(got == 0 && !ended); break  /* O2: closed with nothing sent */
  :: resets -> client_reset = true; break  /* the client resets the connection */
  :: walks -> break                         /* the client walks away: never reads or closes again */
  od
}

proctype Operator() {
  stop = true
}

init {
  atomic {
    if
    :: resets = true
    :: resets = false
    fi;
    if
    :: IDLE -> walks = true
    :: walks = false
    fi;
    if
    :: TLS -> state = HANDSHAKE
    :: PROXY -> proxy_on = true; state = PROXY_HEADER
    :: proxy_on = false; assert(state == CONNECTED)  /* SPEC 4: with no phase before it, CONNECTED */
    fi;
    run Session();
    run Client();
    if
    :: run Operator()
    :: skip
    fi
  }
}
"""

#: What the model covers (tests/formal/test_every_check.py walks the declaration against it), read off the
#: template: the states its processes test and the triggers they fire.  That each declared transition is
#: really taken is spin's "unreached" report, checked in test_model_check.py.
COVERS_STATES = frozenset(re.findall(r"\bstate == (\w+)", _BODY))
COVERS_TRIGGERS = frozenset(re.findall(r"\btrig = (\w+)", _BODY)) - {"NONE"}  # NONE: bytes that fire nothing

_LTL = """
/* Every session reaches CLOSED (pan -a). */
ltl closes { <> (state == CLOSED) }
"""


def promela(
    transitions: Mapping[tuple[str, str], str],
    states: Sequence[str],
    initial: str,
    *,
    nmsg: int = 2,
    idle: bool = True,
    tls: bool = True,
    proxy: bool = True,
    line: bool = True,
) -> str:
    """The Promela text for ``transitions`` (``{(source, trigger): dest}``, as ``table()`` gives).

    A trigger the template fires but the table lacks reaches the ``assert(false)``
    branch, as ``fire`` would raise; a declared trigger the template never fires
    stays in the table, and spin reports its branches unreached.
    """
    triggers = sorted(TEMPLATE_TRIGGERS | {trigger for _, trigger in transitions})
    if not TEMPLATE_STATES.issubset(states):
        raise ValueError(f"the template needs the states {sorted(TEMPLATE_STATES)}")
    for name in (*states, *triggers):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{name!r} is not a Promela identifier")
    branches = [
        f"  :: state == {source} && t == {trigger} -> state = {dest}"
        for (source, trigger), dest in sorted(
            transitions.items(), key=lambda item: (states.index(item[0][0]), item[0][1])
        )
    ]
    text = _HEADER.substitute(
        nmsg=nmsg,
        idle=int(idle),
        tls=int(tls),
        proxy=int(proxy),
        line=int(line),
        state_defines="\n".join(f"#define {name} {i}" for i, name in enumerate(states)),
        trigger_defines="\n".join(f"#define {name} {i}" for i, name in enumerate(triggers)),
        initial=initial,
        fire_branches="\n".join(branches),
    )
    return text + _BODY + _LTL


def fire_lines(text: str) -> dict[int, str]:
    """Line number -> the declared transition it encodes, to read spin's "unreached" report."""
    return {
        number: line.strip()
        for number, line in enumerate(text.splitlines(), start=1)
        if line.startswith("  :: state == ") and " && t == " in line
    }
