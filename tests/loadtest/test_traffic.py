"""What the Locust user sends and how it judges replies, without Locust."""

from __future__ import annotations

import random

import pytest

from loadtest.traffic import ASCII, UNICODE, message, message_size, mismatch, option_problems, parse_host, uses_tls
from statemachine.text import is_disconnect


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("tcp://127.0.0.1:5001", ("127.0.0.1", 5001)),
        ("tcp://localhost", ("localhost", 5000)),
        ("10.0.0.2:7000", ("10.0.0.2", 7000)),
        ("tcp://[::1]:5002/", ("::1", 5002)),
        ("tls://localhost:5003", ("localhost", 5003)),
        (None, ("127.0.0.1", 5000)),
        ("", ("127.0.0.1", 5000)),
    ],
)
def test_host_gives_the_address(url, address):
    assert parse_host(url) == address


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "tcp://127.0.0.1:notaport", "tcp://:5000", "tcp://h:1/x"])
def test_host_that_is_not_a_tcp_address_is_refused(url):
    with pytest.raises(ValueError, match="--host"):
        parse_host(url)


def test_only_the_tls_scheme_means_tls():
    assert uses_tls("tls://127.0.0.1:5000") and uses_tls("TLS://localhost")
    assert not any(uses_tls(url) for url in ("tcp://127.0.0.1:5000", "127.0.0.1:5000", "", None))


def test_sizes_cover_the_range_and_favour_short_messages():
    rng = random.Random(4)
    sizes = [message_size(rng, 1000) for _ in range(5000)]
    assert min(sizes) == 0
    assert max(sizes) <= 1000
    assert max(sizes) > 500
    assert sorted(sizes)[len(sizes) // 2] < 100
    assert message_size(rng, 0) == 0


def test_messages_use_their_alphabet_and_line_framing_can_carry_them():
    rng = random.Random(7)
    for alphabet in (ASCII, UNICODE):
        for size in range(0, 300, 7):
            text = message(rng, alphabet, size)
            assert len(text) == size
            assert set(text) <= set(alphabet)
            assert "\n" not in text and not text.endswith("\r")
            assert not is_disconnect(text)


def test_message_is_never_the_disconnect_word():
    class Scripted(random.Random):
        """Offers the disconnect word first, then ordinary text."""

        def __init__(self):
            super().__init__(1)
            self.offers = [list("Desconexión"), list("hola, mundo")]

        def choices(self, population, k):
            return self.offers.pop(0)

    assert message(Scripted(), UNICODE, 11) == "hola, mundo"


def test_unicode_alphabet_holds_letters_whose_upper_case_is_longer():
    assert any(len(char.upper()) > 1 for char in UNICODE)
    assert any(ord(char) > 0xFFFF for char in UNICODE)


@pytest.mark.parametrize(
    ("expected", "got", "fault"),
    [
        ("HOLA", "HOLA", None),
        ("STRASSE", "STRAßE", "reply differs from the upper-cased message: expected 'S', got 'ß'"),
        ("HOLA", "HOL", "reply is shorter than the upper-cased message"),
        ("HOLA", "HOLA!", "reply is longer than the upper-cased message"),
        ("HOLA", "error: idle timeout", "server said: error: idle timeout"),
    ],
)
def test_mismatch_says_what_differs_in_words_that_do_not_depend_on_the_message(expected, got, fault):
    assert mismatch(expected, got) == fault


@pytest.mark.parametrize(
    ("values", "problems"),
    [
        ({"message_size": 0, "disconnect_rate": 1.0, "think_time": 0.0, "reply_timeout": 0.5}, []),
        ({"message_size": -5}, ["--message-size must be at least 0, got -5"]),
        ({"disconnect_rate": "1.5"}, ["--disconnect-rate must be between 0 and 1, got 1.5"]),
        ({"message_size": "2.5"}, ["--message-size must be a whole number, got '2.5'"]),
        ({"think_time": "nan"}, ["--think-time must be a number, got nan"]),
        (
            {"reply_timeout": 0, "think_time": -1},
            ["--think-time must be at least 0, got -1", "--reply-timeout must be at least 0.001, got 0"],
        ),
    ],
)
def test_user_options_are_checked_with_one_line_each(values, problems):
    assert option_problems(values) == problems
