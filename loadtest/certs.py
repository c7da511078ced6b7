"""A throwaway TLS certificate for benchmarks and tests (O6): made at run time, never kept in the repository.

It is made with the ``openssl`` command (Debian package ``openssl``), self-signed
for ``localhost`` and 127.0.0.1 and valid for a day.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DEFAULT_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


class CertError(RuntimeError):
    """The certificate could not be made (no ``openssl`` command, or it failed)."""


def openssl() -> str | None:
    """The ``openssl`` command's path, or None when it is not installed."""
    return shutil.which("openssl")


def throwaway_cert(directory: Path, name: str = "localhost", names: str = DEFAULT_NAMES) -> tuple[Path, Path]:
    """``(certificate, key)`` PEM files in ``directory`` for ``names`` (a subjectAltName list)."""
    command = openssl()
    if command is None:
        raise CertError("making a throwaway certificate needs the openssl command (Debian package openssl)")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        subprocess.run(
            [command, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"]
            + ["-addext", f"subjectAltName={names}"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CertError(f"openssl could not make a certificate: {exc}") from None
    return cert, key
