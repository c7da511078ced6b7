"""Properties of the core (L2-L8, R1-R4), checked by Hypothesis against the reference model."""

from __future__ import annotations

from statemachine import session as core
from tests.formal import properties, reference


def test_framing_invariance_and_replies_match_the_reference():
    properties.framing_invariance(core)()


def test_the_message_deadline_closes_when_the_reference_says():
    properties.line_deadline(core)()


def test_echoes_are_upper_case_and_never_server_lines():
    properties.echoes_have_no_lower_case(core)()


def test_every_unicode_character_echoes_without_lower_case():
    properties.all_of_unicode_echoes(core)


def test_every_allowed_spelling_of_the_word_disconnects():
    properties.disconnect_variants_close(core)()


def test_near_misses_of_the_word_are_messages():
    properties.near_misses_stay_open(core)()


def test_disconnect_is_recognised_exactly_as_the_rule_says():
    properties.disconnect_is_exactly_the_rule(core)()


def test_raw_reads_are_messages():
    properties.raw_reads_are_messages(core)()


def test_raw_characters_split_across_reads_wait():
    properties.raw_split_characters_wait(core)()


# Two edges the properties above once found the core getting wrong, kept as
# named regressions.


def test_a_last_message_one_byte_too_long_is_refused_at_end_of_stream():
    session = properties.new_session(core, core.LINE, max_line=8)
    out = properties.feed(session, [b"y" * 8 + b"\r"], reference.EOF)
    assert out == reference.line_replies(b"y" * 8 + b"\r", 8, reference.EOF).replies
    assert out == b"error: line too long (max 8 bytes)\n"


def test_a_raw_read_ending_in_an_impossible_sequence_is_invalid():
    reads = [b"ok\xe0\x80", b"fine"]
    session = properties.new_session(core, core.RAW)
    out = properties.feed(session, reads, None)
    assert out == reference.raw_replies(reads).replies
    assert out == b"error: invalid utf-8\nFINE"
