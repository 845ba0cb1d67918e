"""HTTPS for the API, the shells and the plugin, given FRPA_TLS_CERT_FILE and
FRPA_TLS_KEY_FILE.

The pair is read at start-up and again whenever either file changes (cert-manager
rotates them), in a thread. Each new connection takes the newest pair during its
handshake, through the context's server-name callback (called with or without SNI), so
nothing restarts. A pair that does not load leaves the previous one served, and says why.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from cryptography import x509

from api.watched import Stamp, stamp
from nodes.clock import Clock
from schemas.settings import SettingsError

logger = logging.getLogger(__name__)

RELOAD_SECONDS = 2.0


class CertificateError(SettingsError):
    """The pair cannot be served: the message names the setting, its file, and what is
    wrong with it (OpenSSL's own says only "PEM lib", and no file). At start-up it is the
    settings' error the process exits with, as create_app promises."""


def _context(cert_file: str, key_file: str) -> ssl.SSLContext:
    cert = _read("FRPA_TLS_CERT_FILE", cert_file)
    _read("FRPA_TLS_KEY_FILE", key_file)
    try:
        # Parsed alone first, so that what load_cert_chain then refuses is the key's fault.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert.decode())
    except (ValueError, ssl.SSLError):
        raise CertificateError(f"FRPA_TLS_CERT_FILE {cert_file}: not a PEM certificate") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 and newer
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            why = f"not the key of the certificate in FRPA_TLS_CERT_FILE {cert_file}"
        elif e.reason is None:  # OpenSSL's "PEM lib": nothing it could decode
            why = "not a PEM private key"
        else:
            why = f"cannot be served with FRPA_TLS_CERT_FILE {cert_file}: {e.reason}"
        raise CertificateError(f"FRPA_TLS_KEY_FILE {key_file}: {why}") from e
    except OSError as e:  # one of them gone between the two reads
        raise CertificateError(
            f"FRPA_TLS_CERT_FILE {cert_file}, FRPA_TLS_KEY_FILE {key_file}: {e.strerror}"
        ) from e
    return context


def _not_after(cert_file: str) -> float:
    """The end of the (first) certificate's validity in `cert_file`, Unix time."""
    pem = _read("FRPA_TLS_CERT_FILE", cert_file)
    try:
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
    except ValueError as e:
        raise CertificateError(f"FRPA_TLS_CERT_FILE {cert_file}: {e}") from e


def _read(variable: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as e:
        raise CertificateError(f"{variable} {path}: {e.strerror}") from e


class Certificates:
    """Raises CertificateError when made, if the pair cannot be used."""

    def __init__(self, cert_file: str, key_file: str, clock: Clock) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._clock = clock
        self._current = _context(cert_file, key_file)
        # When the certificate served stops being valid, Unix time: for an alert, ahead.
        self.expires_at = _not_after(cert_file)
        self._stamp = self._stamps()
        # What the server is given: its handshakes switch to the current pair.
        self.served = _context(cert_file, key_file)
        self.served.sni_callback = self._pick

    def _pick(
        self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
    ) -> None:
        connection.context = self._current

    async def watch(self) -> None:
        while True:
            await self._clock.sleep(RELOAD_SECONDS)
            seen = await asyncio.to_thread(self._stamps)
            if seen == self._stamp:
                continue
            self._stamp = seen
            try:
                self._current = await asyncio.to_thread(_context, self._cert_file, self._key_file)
                self.expires_at = await asyncio.to_thread(_not_after, self._cert_file)
            except CertificateError as e:
                logger.error("keeping the previous TLS certificate: %s", e)
                continue
            logger.info("TLS certificate reloaded from %s", self._cert_file)

    def _stamps(self) -> tuple[Stamp, ...]:
        return tuple(stamp(path) for path in (self._cert_file, self._key_file))
