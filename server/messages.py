"""Console texts of the server, in the seed's Spanish and in English (S4)."""

from __future__ import annotations

from collections.abc import Mapping
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
    reasons: Mapping[str, str]
    tls_failed: str
    proxy_refused: str
    proxy_unlogged: str

    def closed_line(self, peer: object, reason: str | None) -> str:
        """The one line for a session's end, its reason in words (S4); an unknown reason is shown as named."""
        words = self.reasons.get(reason or "", (reason or "").replace("_", " "))
        return self.closed.format(peer=peer, reason=words)

    process_started: str
    process_died: str
    restarting: str
    while_stopping: str
    process_not_started: str
    gave_up: str
    drain_overdue: str
    exit_status: str
    exit_signal: str


SPANISH = Texts(
    listening="Servidor TCP esperando conexiones en {address}",
    connected="Conexión establecida con el cliente {peer}",
    received="Mensaje recibido: {text}",
    replied="Respuesta enviada al cliente: {text}",
    disconnect="El cliente {peer} solicita desconexión.",
    closed="Conexión cerrada con el cliente {peer}: {reason}",
    busy="Servidor ocupado: conexión rechazada de {peer}",
    busy_unlogged="Servidor ocupado: {count} conexiones más rechazadas sin anotarlas aquí",
    too_many="Demasiadas conexiones desde una dirección: conexión rechazada de {peer}",
    shutting_down="Cerrando el servidor: no se aceptan más conexiones",
    stopped="Servidor detenido",
    forced="Segunda señal: salida inmediata",
    reasons={
        "disconnect": "desconexión pedida",
        "end_of_stream": "el cliente terminó de enviar",
        "line_too_long": "mensaje demasiado largo",
        "idle_timeout": "tiempo de inactividad agotado",
        "line_timeout": "tiempo para completar el mensaje agotado",
        "shutdown": "cierre del servidor",
        "abort": "conexión interrumpida",
    },
    tls_failed="Negociación TLS fallida con el cliente {peer}: {reason}",
    proxy_refused="Conexión rechazada de {peer} (protocolo PROXY): {reason} ({count} en total)",
    proxy_unlogged="Protocolo PROXY: {count} conexiones más rechazadas sin anotarlas aquí ({total} en total)",
    process_started="Proceso {index} de {count} atendiendo conexiones (pid {pid})",
    process_died="El proceso {index} (pid {pid}) {status}",
    restarting="; se reinicia en {delay:.1f} s",
    while_stopping=" al detenerse",
    process_not_started="No se puede iniciar el proceso {index}: {reason}",
    gave_up="El proceso {index} falló {failures} veces en {window:.0f} s: se detiene el servidor",
    drain_overdue="Procesos sin terminar {seconds:.0f} s después de la señal: se matan",
    exit_status="terminó con estado {code}",
    exit_signal="murió por la señal {signum} ({name})",
)

ENGLISH = Texts(
    listening="TCP server listening on {address}",
    connected="Connection established with client {peer}",
    received="Message received: {text}",
    replied="Reply sent to client: {text}",
    disconnect="Client {peer} asks to disconnect.",
    closed="Connection closed with client {peer}: {reason}",
    busy="Server busy: connection refused from {peer}",
    busy_unlogged="Server busy: {count} more connections refused and not logged",
    too_many="Too many connections from one address: connection refused from {peer}",
    shutting_down="Shutting down: no longer accepting connections",
    stopped="Server stopped",
    forced="Second signal: exiting at once",
    reasons={
        "disconnect": "disconnect requested",
        "end_of_stream": "end of stream",
        "line_too_long": "line too long",
        "idle_timeout": "idle timeout",
        "line_timeout": "line timeout",
        "shutdown": "server shutting down",
        "abort": "connection aborted",
    },
    tls_failed="TLS handshake failed with client {peer}: {reason}",
    proxy_refused="Connection refused from {peer} (PROXY protocol): {reason} ({count} so far)",
    proxy_unlogged="PROXY protocol: {count} more connections refused and not logged ({total} in all)",
    process_started="Process {index} of {count} serving (pid {pid})",
    process_died="Process {index} (pid {pid}) {status}",
    restarting="; restarting in {delay:.1f} s",
    while_stopping=" while stopping",
    process_not_started="Cannot start process {index}: {reason}",
    gave_up="Process {index} failed {failures} times within {window:.0f} s: stopping the server",
    drain_overdue="Processes still running {seconds:.0f} s after the signal: killing them",
    exit_status="exited with status {code}",
    exit_signal="was killed by signal {signum} ({name})",
)


def texts(lang: str) -> Texts:
    return SPANISH if lang == "es" else ENGLISH
