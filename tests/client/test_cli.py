"""Flags and environment of ``python -m client``, parsed in-process."""

from __future__ import annotations

import pytest

from client.cli import Config, UsageError, parse


def test_defaults_match_the_seed():
    assert parse([], environ={}) == Config(host="127.0.0.1", port=5000, timeout=10.0, lang="es")


def test_environment_fills_in_and_flags_win():
    environ = {"UPPERECHO_HOST": "::1", "UPPERECHO_PORT": "5001", "UPPERECHO_TIMEOUT": "2.5", "UPPERECHO_LANG": "en"}
    assert parse([], environ=environ) == Config(host="::1", port=5001, timeout=2.5, lang="en")
    flags = ["--host", "localhost", "--port", "6000", "--timeout", "1", "--lang", "es"]
    assert parse(flags, environ=environ) == Config(host="localhost", port=6000, timeout=1.0, lang="es")


def test_timeout_zero_means_wait_forever():
    assert parse(["--timeout", "0"], environ={}).timeout is None
    assert parse([], environ={"UPPERECHO_TIMEOUT": "0"}).timeout is None


def test_scripted_options():
    config = parse(["--file", "-", "--pipeline", "--window", "50"], environ={})
    assert (config.file, config.pipeline, config.window) == ("-", True, 50)
    assert parse(["--file", "m.txt"], environ={}).window == 1000


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--port", "0"], {}, "argument --port: must be between 1 and 65535, got '0'"),
        (["--timeout", "-1"], {}, "argument --timeout: must be at least 0, got '-1'"),
        (["--timeout", "nan"], {}, "argument --timeout: must be at least 0, got 'nan'"),
        (["--lang", "fr"], {}, "argument --lang: must be one of es, en, got 'fr'"),
        (["--host", " "], {}, "argument --host: must not be empty"),
        (["--window", "0", "--pipeline"], {}, "argument --window: must be at least 1, got '0'"),
        (["--window", "10"], {}, "--window only applies with --pipeline"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        ([], {"UPPERECHO_TIMEOUT": "soon"}, "UPPERECHO_TIMEOUT: not a number: 'soon'"),
    ],
)
def test_bad_values_are_usage_errors(argv, environ, message):
    with pytest.raises(UsageError) as caught:
        parse(argv, environ=environ)
    assert str(caught.value) == message
