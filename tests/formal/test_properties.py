"""Properties of the core (L2-L8, R1-R4), checked by Hypothesis against the reference model."""

from __future__ import annotations

from statemachine import proxy
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


def test_a_tls_session_answers_only_after_its_handshake_and_a_failed_one_nothing():
    properties.handshake_outcomes(core)()


# The PROXY protocol header (O2).


def test_a_proxy_header_split_anywhere_reads_the_same():
    properties.proxy_split_invariance(proxy)()


def test_every_truncated_proxy_header_is_rejected_at_end_of_stream():
    properties.proxy_truncations_rejected(proxy)()


def test_a_corrupted_proxy_header_is_rejected_or_read_as_the_reference_reads_it():
    properties.proxy_corruptions_rejected(proxy)()


def test_the_session_answers_nothing_before_a_valid_proxy_header_and_everything_after_it():
    properties.proxy_session_phase(core)()
