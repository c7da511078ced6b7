"""What a session tells the server about itself, from its first moment: open, no reason, no end of stream yet."""

from __future__ import annotations

import pytest

from statemachine import CONNECTED, Limits, Session
from statemachine.session import LINE, RAW


@pytest.mark.parametrize("framing", [LINE, RAW])
def test_a_new_session_is_open_with_no_reason_and_no_end_of_stream(framing):
    session = Session(Limits(framing=framing), 5.0)
    assert (session.state, session.is_open, session.reason, session.eof) == (CONNECTED, True, None, False)
    assert session.last_input == 5.0
    session.receive(b"hola\n", 6.0)
    assert (session.reason, session.eof, session.last_input) == (None, False, 6.0)
    session.end_of_stream()
    assert (session.reason, session.eof) == ("end_of_stream", True)
