"""Console texts of the server, in the seed's Spanish and in English (S4)."""

from __future__ import annotations

from dataclasses import dataclass

LANGS = ("es", "en")


@dataclass(frozen=True, slots=True)
class Texts:
    listening: str
    connected: str
    received: str
    replied: str
    disconnect: str
    closed: str
    busy: str
    busy_unlogged: str
    too_many: str
    shutting_down: str
    stopped: str
    forced: str


SPANISH = Texts(
    listening="Servidor TCP esperando conexiones en {address}",
    connected="Conexión establecida con el cliente {peer}",
    received="Mensaje recibido: {text}",
    replied="Respuesta enviada al cliente: {text}",
    disconnect="El cliente {peer} solicita desconexión.",
    closed="Conexión cerrada con el cliente {peer} ({reason})",
    busy="Servidor ocupado: conexión rechazada de {peer}",
    busy_unlogged="Servidor ocupado: {count} conexiones más rechazadas sin anotarlas aquí",
    too_many="Demasiadas conexiones desde una dirección: conexión rechazada de {peer}",
    shutting_down="Cerrando el servidor: no se aceptan más conexiones",
    stopped="Servidor detenido",
    forced="Segunda señal: salida inmediata",
)

ENGLISH = Texts(
    listening="TCP server listening on {address}",
    connected="Connection established with client {peer}",
    received="Message received: {text}",
    replied="Reply sent to client: {text}",
    disconnect="Client {peer} asks to disconnect.",
    closed="Connection closed with client {peer} ({reason})",
    busy="Server busy: connection refused from {peer}",
    busy_unlogged="Server busy: {count} more connections refused and not logged",
    too_many="Too many connections from one address: connection refused from {peer}",
    shutting_down="Shutting down: no longer accepting connections",
    stopped="Server stopped",
    forced="Second signal: exiting at once",
)


def texts(lang: str) -> Texts:
    return SPANISH if lang == "es" else ENGLISH
