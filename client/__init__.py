"""The upperecho client: one connection class shared by the CLI, the tests and Locust."""

from client.connection import ClientError, ConnectError, Connection, ConnectionLost, ServerError

__all__ = ["ClientError", "ConnectError", "Connection", "ConnectionLost", "ServerError"]
