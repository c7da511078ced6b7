"""The lines the server originates are the spec's, word for word, and start with ``error: `` (L5, L6, L8-L11).

The core owns these texts; the worker sends them (the busy line without a
session).  Clients tell a server line from an echo by its lower-case
``error: `` prefix, so a changed text is a changed protocol.
"""

from __future__ import annotations

import pytest

from statemachine import session

SPEC = {
    "ERROR_INVALID_UTF8": "error: invalid utf-8",  # L5
    "ERROR_IDLE": "error: idle timeout",  # L9
    "ERROR_BUSY": "error: server busy",  # L10
    "ERROR_SHUTDOWN": "error: server shutting down",  # L11
}


@pytest.mark.parametrize("name", SPEC)
def test_each_server_line_is_the_specs_text(name):
    assert getattr(session, name) == SPEC[name]


@pytest.mark.parametrize("max_line", [1, 8, 65536])
def test_the_too_long_line_names_the_limit(max_line):
    """L6: ``error: line too long (max 65536 bytes)`` with the server's own limit."""
    assert session.error_too_long(max_line) == f"error: line too long (max {max_line} bytes)"


def test_every_server_line_starts_with_the_lower_case_prefix():
    lines = [getattr(session, name) for name in SPEC] + [session.error_too_long(8)]
    assert all(line.startswith("error: ") and "\n" not in line for line in lines)
