"""Console texts of the interactive client: the seed's Spanish (C1) and English."""

from __future__ import annotations

from dataclasses import dataclass

LANGS = ("es", "en")


@dataclass(frozen=True, slots=True)
class Texts:
    connected: str
    prompt: str
    reply: str
    closing: str


SPANISH = Texts(
    connected="Se establece una conexión con el servidor.",
    prompt="Ingresa mensaje (o 'DESCONEXION' para salir): ",
    reply="Respuesta del servidor: {text}",
    closing="Cerrando conexión con el servidor...",
)

ENGLISH = Texts(
    connected="Connected to the server.",
    prompt="Enter a message (or 'DESCONEXION' to quit): ",
    reply="Server reply: {text}",
    closing="Closing the connection to the server...",
)


def texts(lang: str) -> Texts:
    return SPANISH if lang == "es" else ENGLISH
