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
from statemachine.session import FRAMINGS


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"framing": "lines"}, f"framing must be one of {', '.join(FRAMINGS)}"),
        ({"max_line": 0}, "max_line must be at least 1"),
        ({"idle_timeout": -1}, "idle_timeout must not be negative"),
    ],
)
def test_a_bad_setting_is_refused_with_a_message_naming_it(settings, message):
    with pytest.raises(ValueError) as refused:
        Limits(**settings)
    assert str(refused.value) == message


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
