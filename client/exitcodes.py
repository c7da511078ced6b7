"""Exit statuses of ``python -m client``, documented in ``--help`` and docs/client.md."""

from __future__ import annotations

OK = 0
FAILED = 1  # an ``error:`` line from the server, a lost connection, a protocol error
USAGE = 2  # a bad flag or environment variable, an unreadable input file
CANNOT_CONNECT = 3
INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

HELP = """exit status:
  0    every message answered (or the interactive session ended normally)
  1    the server sent an error line, the connection was lost, or standard output was closed
  2    usage error, or the input file cannot be read or is not UTF-8
  3    cannot connect to the server
  130  interrupted (Ctrl-C)"""
