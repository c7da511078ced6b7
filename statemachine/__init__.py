"""The sans-I/O core of upperecho: framing, text rules and the session state machine.

Nothing in this package opens a socket, starts a thread or reads a clock.
"""

from statemachine.framing import LineFramer, LineTooLong, split_block
from statemachine.machine import CLOSED, CLOSING, CONNECTED, ECHOING, MACHINE, STATES, TRANSITIONS, MachineError
from statemachine.session import LINE, RAW, Limits, Session
from statemachine.text import is_disconnect

__all__ = [
    "CLOSED",
    "CLOSING",
    "CONNECTED",
    "ECHOING",
    "LINE",
    "Limits",
    "LineFramer",
    "LineTooLong",
    "MACHINE",
    "MachineError",
    "RAW",
    "STATES",
    "Session",
    "TRANSITIONS",
    "is_disconnect",
    "split_block",
]
