"""A server's session settings: checked once with a message that names the setting, and shared read-only.

``Limits`` is one object for every session of a server; a session that could
change it would change it for all.  A library user who passes a bad value gets
a ``ValueError`` saying which setting and why (the server's flags are checked
earlier, with the same limits).
"""

from __future__ import annotations

import dataclasses

import pytest

from statemachine import Limits, Session
from statemachine.framing import LineFramer
from statemachine.session import FRAMINGS, PROXY_MODES


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"framing": "lines"}, f"framing must be one of {', '.join(FRAMINGS)}"),
        ({"max_line": 0}, "max_line must be at least 1"),
        ({"idle_timeout": -1}, "idle_timeout must not be negative"),
        ({"line_timeout": -1}, "line_timeout must not be negative"),
        ({"handshake_timeout": 0}, "handshake_timeout must be positive"),
        ({"handshake_timeout": -1}, "handshake_timeout must be positive"),
        ({"proxy": "v3"}, f"proxy must be one of {', '.join(PROXY_MODES)}"),
        ({"proxy_timeout": 0}, "proxy_timeout must be positive"),
    ],
)
def test_a_bad_setting_is_refused_with_a_message_naming_it(settings, message):
    with pytest.raises(ValueError) as refused:
        Limits(**settings)
    assert str(refused.value) == message


def test_the_smallest_settings_the_spec_allows_are_accepted():
    """0 turns the idle timeout (L9) and the message deadline (L14) off; one byte is a line's least room."""
    limits = Limits(max_line=1, idle_timeout=0, line_timeout=0, handshake_timeout=0.001, proxy_timeout=0.001)
    session = Session(limits, 0.0)
    assert session.idle_deadline() is None
    assert session.receive(b"a", 0.0) == b""
    assert session.line_deadline() is None


def test_the_defaults_are_the_specs():
    """A library user who passes nothing gets what the spec and the server's flags promise."""
    assert Limits() == Limits(
        framing="line",  # line framing is the default (SPEC 2), `--framing line`
        max_line=65536,  # L6
        idle_timeout=300.0,  # L9
        line_timeout=60.0,  # L14
        handshake_timeout=10.0,  # O6
        proxy="off",  # O2
        proxy_timeout=5.0,  # O2
    )


@pytest.mark.parametrize(("name", "value"), [("framing", "raw"), ("max_line", 1), ("idle_timeout", 1.0)])
def test_settings_shared_by_every_session_cannot_be_changed_by_one(name, value):
    limits = Limits()
    session = Session(limits, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(session.limits, name, value)
    assert limits == Limits()


def test_a_framer_without_room_for_a_byte_is_refused_with_a_message_naming_it():
    with pytest.raises(ValueError) as refused:
        LineFramer(0)
    assert str(refused.value) == "max_line must be at least 1"
