"""Generate a Promela model of one worker's loop serving several sessions (server/worker.py).

Where promela.py models one connection, this models the loop that serves many:
one ``Worker`` process, ``N`` client processes, and an ``Operator`` who may
send SIGTERM.  A turn of the loop is one atomic step of the worker, as one
pass over the events ``epoll`` returned is in the code: it accepts or refuses
waiting connections (L10), gives every connection that is ready at most one
read (L16), reads nothing from a session whose unsent replies are over the
bound (L12), closes what is closing (L13: FIN once every reply is handed over,
then lingering until the client closes or the drain time passes; an abort when
the drain time passes first), fires the idle timeout (L9), and on shutdown
(L11) stops accepting, answers what each session has already received, sends
the notice and ends within the drain time.  Time is counted in turns: each
session's timers count down once a turn, as the worker's deadlines come due
while it turns.

What is generated and what is hand-written: the states and the ``fire`` table
come from :mod:`statemachine.machine` (one branch per declared pair, and an
``assert(false)`` for any other); the model's sizes come from
:func:`constants`, which reads the code's own figures and checks the relations
between them that the model relies on.  The template below is written from
server/worker.py.

Properties (spin, ``test_worker_model.py``):

* every complete message a session has received is answered before it closes
  (unless reading is paused, L12), and
  every reply it made reaches the client before the FIN (assertions);
* no starvation: a session ready at the start of a turn is served in that turn
  (``assert(wait[i] <= MAXWAIT)``, with ``MAXWAIT`` 0);
* the busy limit: never more than ``MAXCONN`` sessions not yet CLOSED;
* every session reaches CLOSED, frees its slot and its socket, and every client
  is done (``ltl ends``, under weak fairness);
* shutdown ends in bounded time: the worker stops at most ``DRAIN + 1`` turns
  after it begins (an assertion), and always does once told (``ltl stops``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from string import Template

from server import config, worker
from statemachine import machine

#: The states the template tests and the triggers it fires.
COVERS_STATES = frozenset({"CONNECTED", "ECHOING", "CLOSING", "CLOSED"})
COVERS_TRIGGERS = frozenset({"message", "disconnect", "end_of_stream", "idle_timeout", "shutdown", "flushed", "abort"})


def constants() -> dict[str, int]:
    """The model's sizes, from the code's figures, scaled down to what spin can explore.

    The model keeps the code's structure and the relations between its figures,
    not their sizes: one read per ready connection per turn (READ messages, for
    ``READ_SIZE`` bytes); reading paused while more than BOUND replies are unsent
    (``output_limit`` is a whole number of reads); at most SHUTDOWN_READS more
    reads on shutdown; MAXCONN sessions for N clients, so one meets the limit.
    """
    output_limit = config.DEFAULT_OUTPUT_LIMIT
    if output_limit < worker.READ_SIZE or output_limit % worker.READ_SIZE:
        raise ValueError("the model assumes the output bound is a whole number (at least one) of reads")
    if worker._SHUTDOWN_READS < 1 or config.DEFAULT_DRAIN_TIMEOUT <= 0:
        raise ValueError("the model assumes the shutdown reads at least once and the drain time is positive")
    clients = 3
    return {
        "N": clients,
        "NMSG": 1,  # messages each client sends before its word or half-close
        "READ": 1,  # messages one read takes
        "BOUND": 0,  # unsent replies over which reading stops: the smallest (the code: output_limit // READ_SIZE reads)
        "SHUTDOWN_READS": min(worker._SHUTDOWN_READS, 2),
        "MAXCONN": min(config.DEFAULT_MAX_CONNECTIONS, clients - 1),
        "DRAIN": 1,  # turns
        "IDLE": 1,  # turns
        "MAXWAIT": 0,  # turns a ready session may wait: served in the turn it is ready
    }


_HEADER = Template(
    """\
/* upperecho: one worker's loop, generated from server/worker.py's figures and statemachine/machine.py
 * by tests/formal/promela_worker.py.  Regenerate rather than edit. */

$constant_defines
#define NEW 250        /* no session yet */

/* states, from STATES */
$state_defines
/* triggers, from the declared events */
$trigger_defines

byte st[N];            /* session state */
byte inq[N];           /* complete messages in the socket, not yet read */
bool word[N];          /* the disconnect word follows them in the socket */
bool eof[N];           /* the client half-closed after them */
byte answered[N];      /* messages the session answered */
byte repl[N];          /* replies to messages not yet read by the client */
bool last[N];          /* the closing line (the word's reply or a notice) not yet read: after the replies */
bool fin[N];           /* the worker shut down the sending side */
bool rst[N];           /* the worker reset the connection */
bool sock[N];          /* the worker holds the socket */
bool want[N];          /* the client is connecting, waiting to be accepted */
bool refused[N];       /* turned away (busy line, or shutdown) */
bool cclosed[N];       /* the client closed its socket */
byte drain[N];         /* turns left: CLOSING until the abort, or lingering until the close */
byte idle[N];          /* turns left until the idle timeout */
byte wait[N];          /* turns the session was ready and not served */
byte live = 0;         /* sessions not yet CLOSED (the server's count, L10) */
bool stop = false;     /* SIGTERM */
bool stopping = false; /* the worker has begun its shutdown */
bool stopped = false;  /* the worker's loop has ended */
byte hard = 0;         /* turns left of the shutdown's drain time */
byte finished = 0;     /* client processes done */

inline fire(i, t) {
  if
$fire_branches
  :: else -> assert(false)  /* an undeclared (state, trigger) pair */
  fi
}
"""
)

_BODY = """
#define OPEN(i) (st[i] == CONNECTED || st[i] == ECHOING)
#define UNSENT(i) (repl[i] + last[i])
#define PAUSED(i) (UNSENT(i) > BOUND)
#define HAS_INPUT(i) (inq[i] > 0 || word[i] || eof[i])
#define READY(i) (sock[i] && OPEN(i) && (!PAUSED(i) || !BACKPRESSURE) && HAS_INPUT(i))

/* The open part of session i ends with trigger t.  Every complete message it has received (the word too)
 * is answered by then, unless reading is paused (L12: a client over the bound is not read from, even on
 * shutdown). */
inline close_open(i, t) {
  assert((inq[i] == 0 && !word[i]) || PAUSED(i));
  fire(i, t); drain[i] = DRAIN
}

/* One read from session i (Worker._on_readable, Session.receive / end_of_stream). */
inline read_once(i) {
  k = 0;
  do
  :: k < READ && inq[i] > 0 -> inq[i]--; answered[i]++; repl[i]++; fire(i, message); k++
  :: else -> break
  od;
  if
  :: inq[i] == 0 && word[i] && k < READ -> word[i] = false; close_open(i, disconnect); last[i] = true
  :: inq[i] == 0 && !word[i] && eof[i] && k == 0 -> close_open(i, end_of_stream)
  :: else -> skip
  fi;
  idle[i] = IDLE;
  assert(UNSENT(i) <= BOUND + READ + 1)  /* L12: unsent output stays under the bound plus one read */
}

/* The session is CLOSED: the server's count goes down (Worker._finish / _abort). */
inline ended(i) {
  assert(live > 0);
  live--
}

/* CLOSING: FIN once every reply is handed over, then linger (Worker._on_closing, _finish, _linger). */
inline closing(i) {
  if
  :: st[i] == CLOSING && (UNSENT(i) == 0 || !FLUSH_WAITS) ->
     repl[i] = 0; last[i] = false;  /* (nothing is left, unless FLUSH_WAITS is off) */
     fin[i] = true; fire(i, flushed); ended(i); drain[i] = DRAIN
  :: else -> skip
  fi
}

inline reset(i) {
  if
  :: st[i] != CLOSED -> fire(i, abort); if :: FREE_ON_ABORT -> ended(i) :: else -> skip fi
  :: else -> skip
  fi;
  rst[i] = true; sock[i] = false
}

/* Shutdown for one session (Worker._shutdown_session): read what has arrived unless paused, then the notice. */
inline shut(i) {
  r = 0;
  do
  :: r < SHUTDOWN_READS && OPEN(i) && !PAUSED(i) && HAS_INPUT(i) -> read_once(i); r++
  :: else -> break
  od;
  if
  :: OPEN(i) -> close_open(i, shutdown); last[i] = true
  :: else -> skip
  fi;
  closing(i)
}

/* The worker's scratch variables: recomputed every turn, so kept out of the state vector. */
hidden byte i, k, r, nopen;
hidden byte ready[N], served[N], any;
byte since = 0;        /* turns since the shutdown began */

proctype Worker() {
  do
  :: stopped -> break
  :: else ->
     d_step {
       /* SIGTERM: stop accepting, shut every session down (Worker._begin_shutdown) */
       if
       :: stop && !stopping ->
          stopping = true; hard = DRAIN;
          for (i : 0 .. N - 1) { if :: sock[i] && OPEN(i) -> shut(i) :: else -> skip fi }
       :: else -> skip
       fi;
       /* accept or refuse (Worker._accept, Server.admit): L10 */
       for (i : 0 .. N - 1) {
         if
         :: want[i] && stopping -> want[i] = false; refused[i] = true; inq[i] = 0; word[i] = false; eof[i] = false
         :: want[i] && !stopping && live >= MAXCONN && ADMIT_CHECK ->
            want[i] = false; refused[i] = true; inq[i] = 0; word[i] = false; eof[i] = false
         :: want[i] && !stopping && (live < MAXCONN || !ADMIT_CHECK) ->
            want[i] = false; sock[i] = true; st[i] = CONNECTED; live++; idle[i] = IDLE
         :: else -> skip
         fi
       }
       assert(live <= MAXCONN);  /* L10: never more sessions than the limit */
       /* the events of this turn: every ready session gets at most one read (L16) */
       any = false;
       for (i : 0 .. N - 1) { ready[i] = READY(i); served[i] = false }
       for (i : 0 .. N - 1) {
         if
         :: ready[i] && (SERVE_ALL || !any) -> read_once(i); any = true; served[i] = true
         :: else -> skip
         fi;
         if
         :: sock[i] && st[i] == CLOSED && cclosed[i] -> sock[i] = false  /* the lingering close is done */
         :: else -> closing(i)
         fi
       }
       /* no starvation: a session ready at the start of a turn is served within MAXWAIT more turns */
       for (i : 0 .. N - 1) {
         if
         :: ready[i] && !served[i] -> wait[i]++; assert(wait[i] <= MAXWAIT)
         :: else -> wait[i] = 0
         fi
       }
       /* timers (Worker._on_timer): idle (L9); the drain of a closing session; lingering (L13) */
       for (i : 0 .. N - 1) {
         if
         :: sock[i] && OPEN(i) && idle[i] > 0 -> idle[i]--
         :: sock[i] && OPEN(i) && idle[i] == 0 -> close_open(i, idle_timeout); last[i] = true; closing(i)
         :: sock[i] && (st[i] == CLOSING || st[i] == CLOSED) && drain[i] > 0 -> drain[i]--
         :: sock[i] && st[i] == CLOSING && drain[i] == 0 -> reset(i)        /* the client does not read */
         :: sock[i] && st[i] == CLOSED && drain[i] == 0 -> sock[i] = false  /* lingering ends */
         :: else -> skip
         fi
       }
       /* shutdown ends when no socket is left, or at the hard deadline (Worker.run) */
       if
       :: stopping ->
          nopen = 0;
          for (i : 0 .. N - 1) { if :: sock[i] -> nopen++ :: else -> skip fi }
          if
          :: nopen == 0 -> stopped = true
          :: nopen > 0 && hard == 0 && HARD ->
             for (i : 0 .. N - 1) { if :: sock[i] -> reset(i) :: else -> skip fi }
             stopped = true
          :: else -> if :: hard > 0 -> hard-- :: else -> skip fi
          fi;
          since++;
          assert(since <= DRAIN + 1)  /* shutdown ends in bounded time: the drain time, one turn more */
       :: else -> skip
       fi
     }
  od
}

/* A client: connects and writes at once (its message, then the word, a half-close, or nothing more), then
 * reads, or never reads again.  Clients arrive in turn (client c once c - 1 is accepted or refused): they are
 * alike, so the order of arrival is a symmetry, not a case. */
proctype Client(byte c) {
  bool reads = true;
  byte got = 0;
  (c == 0 || (!want[c - 1] && (refused[c - 1] || st[c - 1] != NEW)) || stopped);
  atomic {
    if
    :: word[c] = true
    :: eof[c] = true
    :: skip               /* and then nothing: the idle timeout (L9) ends it */
    :: word[c] = true; reads = false  /* never reads: its replies pile up (L12), its close is aborted (L13) */
    fi;
    inq[c] = NMSG; want[c] = true
  }
  if
  :: refused[c] -> goto out
  :: st[c] != NEW -> skip
  :: stopped && want[c] -> goto out   /* never accepted: the server is gone */
  fi;
  do
  :: atomic { reads && UNSENT(c) > 0 && !rst[c] -> got = got + repl[c]; repl[c] = 0; last[c] = false }
  :: atomic { fin[c] && UNSENT(c) == 0 && !rst[c] && !cclosed[c] ->
       assert(got == answered[c]);  /* FIN came after every reply the session made: none lost */
       cclosed[c] = true }
  :: rst[c] || cclosed[c] -> break
  :: !reads -> break   /* walks away: never reads or closes again */
  od;
out:
  finished++
}

proctype Operator() {
  stop = true
}

init {
  atomic {
    for (i : 0 .. N - 1) { st[i] = NEW }
    for (i : 0 .. N - 1) { run Client(i) }
    run Worker();
    if
    :: run Operator()
    :: skip
    fi
  }
}

/* Every session reaches CLOSED and frees its slot and socket; every client is done. */
ltl ends { <> ALL_DONE }
/* Once told to stop, the worker stops. */
ltl stops { [] (stop -> <> stopped) }
"""

#: Switches the template reads; 1 is the code's behaviour, 0 a mutant of the worker (test_worker_model.py).
SWITCHES = {"SERVE_ALL": 1, "BACKPRESSURE": 1, "FLUSH_WAITS": 1, "ADMIT_CHECK": 1, "FREE_ON_ABORT": 1, "HARD": 1}


def promela(
    transitions: Mapping[tuple[str, str], str], states: Sequence[str], sizes: Mapping[str, int] | None = None
) -> str:
    """The Promela text of the worker loop over the declared ``transitions`` (as ``table()`` gives)."""
    sizes = {**constants(), **SWITCHES} if sizes is None else sizes
    if not COVERS_STATES.issubset(states):
        raise ValueError(f"the template needs the states {sorted(COVERS_STATES)}")
    triggers = sorted(COVERS_TRIGGERS | {trigger for _, trigger in transitions})
    for name in (*states, *triggers):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{name!r} is not a Promela identifier")
    branches = [
        f"  :: st[i] == {source} && t == {trigger} -> st[i] = {dest}"
        for (source, trigger), dest in sorted(
            transitions.items(), key=lambda item: (states.index(item[0][0]), item[0][1])
        )
    ]
    text = _HEADER.substitute(
        constant_defines="\n".join(f"#define {name} {value}" for name, value in sizes.items()),
        state_defines="\n".join(f"#define {name} {i}" for i, name in enumerate(states)),
        trigger_defines="\n".join(f"#define {name} {i}" for i, name in enumerate(triggers)),
        fire_branches="\n".join(branches),
    )
    sockets = " && ".join(f"!sock[{i}]" for i in range(sizes["N"]))
    return text + _BODY.replace("ALL_DONE", f"(finished == N && live == 0 && {sockets})")


def generate(**overrides: int) -> str:
    """The model of the declared machine, with the code's figures (``overrides`` for the mutants)."""
    return promela(machine.table(), machine.STATES, {**constants(), **SWITCHES, **overrides})
