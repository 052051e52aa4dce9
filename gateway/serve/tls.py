"""TLS for terminals: the policy over Twisted's TLS (pyOpenSSL), docs/protocol.md §1.1.

- TLS 1.2 at least (1.3 is negotiated whenever the terminal offers it); with 1.2 only ECDHE key exchange with
  AEAD ciphers. No session resumption: every connection shows its certificate and is checked anew.
- Every terminal presents a certificate issued by the operator's terminal CA (`tls.client_ca`), naming its
  terminal id as the subject CN; expired, revoked (`tls.crl`) and unknown-CA certificates fail the handshake,
  with one log line saying which. The SignIn must then be for that terminal (gateway.serve.dispatch).
- The CRL is reloaded when its file changes, before the next connection is accepted: a revocation takes effect
  without a restart. A CRL that cannot be read or is not the CA's keeps the last good one in force (and says so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _openssl_ffi
from OpenSSL._util import lib as _openssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from gateway.config import TlsConfig
from gateway.pki.authority import PkiError, read_crl
from gateway.pki.names import describe, terminal_id_of

log = Logger(namespace="gateway.serve.tls")

# TLS 1.2's suites with forward secrecy and authenticated encryption; TLS 1.3 has only such suites.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
MINIMUM_VERSION = TLSVersion.TLSv1_2

# OpenSSL's verification errors an operator meets, in words (X509_V_ERR_*).
_VERIFY_ERRORS = {
    9: "is not valid yet",
    10: "has expired",
    18: "is self-signed, not issued by the terminal CA",
    19: "comes with a CA that is not the terminal CA",
    20: "is not issued by the terminal CA",
    21: "is not issued by the terminal CA",
    23: "has been revoked",
    26: "is not meant for a terminal (extended key usage)",
}


# TLS alerts (RFC 8446 §6, RFC 5246 §7.2), for the log.
_FATAL = 2
_ALERTS = {
    10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow", 40: "handshake_failure",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension", 110: "unsupported_extension",
    112: "unrecognized_name", 116: "certificate_required", 120: "no_application_protocol",
}
_SENT_ALERT_REASONS = {
    116: "it presented no certificate (alert certificate_required)",
    40: "no certificate, or no cipher suite in common: TLS 1.2 needs ECDHE with AES-GCM or ChaCha20 "
        "(alert handshake_failure)",
    70: "it offers no TLS version from 1.2 up (alert protocol_version)",
}


class TlsSetupError(Exception):
    """The TLS listener cannot start: a file is missing, unreadable or does not match."""


@dataclass(frozen=True)
class _Loaded:
    context: SSL.Context
    revoked: int


@implementer(IOpenSSLServerConnectionCreator)
class TerminalTls:
    """Makes the OpenSSL connection of every TLS terminal connection, from a context rebuilt when the CRL changes."""

    def __init__(self, config: TlsConfig) -> None:
        self._config = config
        try:
            self._certificates = _read_certificates(Path(config.certificate), "tls.certificate")
            self._key = _read_key(Path(config.private_key))
            client_ca = _read_certificates(Path(config.client_ca), "tls.client_ca")
        except ValueError as exc:
            raise TlsSetupError(str(exc)) from exc
        if len(client_ca) != 1:
            raise TlsSetupError(f"tls.client_ca {config.client_ca} must hold one certificate, the terminal CA's "
                                f"(it holds {len(client_ca)})")
        self._client_ca = client_ca[0]
        self._crl_path = Path(config.crl) if config.crl else None
        self._crl_stamp = self._stamp()
        if self._crl_path is not None and self._crl_stamp is None:
            raise TlsSetupError(f"tls.crl {self._crl_path} does not exist: `gateway pki init-ca` writes it; "
                                'set tls.crl = "" to serve without revocation')
        try:
            self._loaded = self._load()
        except PkiError as exc:
            raise TlsSetupError(str(exc)) from exc
        except SSL.Error as exc:
            raise TlsSetupError(f"tls.private_key {config.private_key} does not match tls.certificate "
                                f"{config.certificate}: {_openssl_reason(exc)}") from exc

    @property
    def revoked_count(self) -> int:
        return self._loaded.revoked

    def factory(self, wrapped: Any) -> TLSMemoryBIOFactory:
        """The terminals' factory `wrapped` in this TLS policy."""
        return TerminalTlsFactory(self, False, wrapped)  # type: ignore[arg-type]  # zope: it provides the interface

    # IOpenSSLServerConnectionCreator ----------------------------------------------------------------------

    def serverConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        self._reload_if_changed()
        connection = SSL.Connection(self._loaded.context, None)
        connection.set_app_data(tls_protocol)
        return connection

    # The context --------------------------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        options = CertificateOptions(
            # pyOpenSSL takes cryptography's objects (its own X509 and PKey are deprecated).
            privateKey=self._key,
            certificate=self._certificates[0],  # type: ignore[arg-type]  # Twisted's hints predate that
            extraCertChain=self._certificates[1:],  # type: ignore[arg-type]
            trustRoot=trustRootFromCertificates(  # type: ignore[no-untyped-call]
                [Certificate(crypto.X509.from_cryptography(self._client_ca))]),  # type: ignore[no-untyped-call]
            raiseMinimumTo=MINIMUM_VERSION,
            acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS),  # type: ignore[no-untyped-call]
            enableSessions=False,
            enableSessionTickets=False,
        )
        context = options.getContext()
        revoked = 0
        if self._crl_path is not None:
            crl = read_crl(self._crl_path, self._client_ca)
            store = context.get_cert_store()
            if store is None:  # pyOpenSSL types it optional; a context made by CertificateOptions has one
                raise TlsSetupError("the TLS context has no certificate store to hold the CRL")
            store.add_crl(crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
            revoked = len(crl)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
        context.set_info_callback(_alerted)
        return _Loaded(context, revoked)

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._crl_path is None:
            return None
        try:
            status = os.stat(self._crl_path)
        except OSError:
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def _reload_if_changed(self) -> None:
        stamp = self._stamp()
        if stamp == self._crl_stamp:
            return
        self._crl_stamp = stamp
        if stamp is None:
            log.error("the certificate revocation list {path} is gone; the last one read stays in force",
                      path=str(self._crl_path))
            return
        try:
            self._loaded = self._load()
        except (PkiError, TlsSetupError) as exc:
            log.error("certificate revocation list not reloaded, the last one read stays in force: {reason}",
                      reason=str(exc))
            return
        log.info("certificate revocation list {path} reloaded: {count} certificate(s) revoked",
                 path=str(self._crl_path), count=self._loaded.revoked)


def _verify(connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int) -> bool:
    """OpenSSL's verdict on each certificate of the terminal's chain, and ours on its name; one log line per
    refused handshake."""
    peer = connection.get_app_data()
    if not ok:
        what = _VERIFY_ERRORS.get(error, f"failed verification (OpenSSL error {error})")
        cryptography_certificate = certificate.to_cryptography()
        if error == 10:
            what += f" (on {cryptography_certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
        _refuse(peer, f"its certificate {describe(cryptography_certificate)} {what}")
        return False
    if depth == 0 and terminal_id_of(certificate.to_cryptography()) is None:
        _refuse(peer, f"its certificate {describe(certificate.to_cryptography())} names no terminal id "
                      "(one subject CN in the registry's form)")
        return False
    return True


def _alerted(connection: SSL.Connection, where: int, value: int) -> None:
    """A fatal TLS alert during the handshake, sent or received, that no certificate check explained already: a
    terminal without a certificate, with too old a TLS, or one refusing the gateway's certificate. (Alerts after
    the handshake are connections ending, e.g. a peer closing without close_notify.)"""
    peer = connection.get_app_data()
    if where & SSL.SSL_CB_HANDSHAKE_DONE and isinstance(peer, TerminalTlsTransport):
        peer.handshake_finished = True
        return
    if not where & SSL.SSL_CB_ALERT or value >> 8 != _FATAL:
        return
    if getattr(peer, "refusal_logged", False) or getattr(peer, "handshake_finished", False):
        return
    alert = _ALERTS.get(value & 0xFF, f"alert {value & 0xFF}")
    if where & SSL.SSL_CB_WRITE_ALERT == SSL.SSL_CB_WRITE_ALERT:
        _refuse(peer, _SENT_ALERT_REASONS.get(value & 0xFF, f"the gateway sent the alert {alert}"))
    else:
        _refuse(peer, f"the terminal sent the alert {alert} (does it trust the gateway's certificate and CA?)")


def _refuse(peer: Any, reason: str) -> None:
    if isinstance(peer, TerminalTlsTransport):
        peer.refusal_logged = True
    log.warn("TLS handshake from {peer} refused: {reason}", peer=_peer_name(peer), reason=reason)


class TerminalTlsTransport(TLSMemoryBIOProtocol):
    """Twisted's TLS transport, remembering whether its handshake finished and whether its refusal was logged (one
    line per refused handshake), and giving back the memory its handshake needed once it is over.

    It is TLSMemoryBIOProtocol itself, not Twisted's default BufferingTLSTransport: that one holds every write
    back until the reactor's next turn (a timer per write) to join small writes into one TLS record, and the
    adapter (gateway.serve.adapter) already writes all the answers of a turn in one write.
    """

    refusal_logged = False
    handshake_finished = False
    handshake_memory_released = False

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        if self.handshake_finished and not self.handshake_memory_released:
            self._release_handshake_memory()

    def _release_handshake_memory(self) -> None:
        """Swap the connection's two memory BIOs for empty ones once both are drained.

        A memory BIO keeps the capacity of the most it ever held (OpenSSL's BUF_MEM does not shrink when read),
        so each would keep the handshake's flights, certificates included, for the whole connection: about
        5.5 KB of an idle connection's ~40 KB (BENCHMARKS.md, "What TLS costs"). Answers after the handshake are
        small (the largest frame is max_frame_bytes, but an idle terminal's are heartbeats).
        pyOpenSSL has no call for it: its Connection's BIO attributes are private, so when a pyOpenSSL release
        renames them nothing is swapped (tests/test_tls.py checks that the swap happens).
        """
        connection = self._tlsConnection
        into_ssl = getattr(connection, "_into_ssl", None)
        from_ssl = getattr(connection, "_from_ssl", None)
        ssl = getattr(connection, "_ssl", None)
        if into_ssl is None or from_ssl is None or ssl is None:
            self.handshake_memory_released = True  # a pyOpenSSL without them: nothing to do, and no retry
            return
        null = _openssl_ffi.NULL
        if _openssl.BIO_get_mem_data(into_ssl, null) or _openssl.BIO_get_mem_data(from_ssl, null):
            return  # bytes not yet taken by OpenSSL or the socket: retried on the next bytes received
        fresh_in = _openssl.BIO_new(_openssl.BIO_s_mem())
        fresh_out = _openssl.BIO_new(_openssl.BIO_s_mem())
        if fresh_in == null or fresh_out == null:  # out of memory: keep the old ones, which work
            for bio in (fresh_in, fresh_out):
                if bio != null:
                    _openssl.BIO_free(bio)
            return
        # The SSL owns its BIOs: SSL_set_bio frees the old pair and takes the new one (freed with the SSL).
        _openssl.SSL_set_bio(ssl, fresh_in, fresh_out)
        connection._into_ssl = fresh_in
        connection._from_ssl = fresh_out
        self.handshake_memory_released = True


class TerminalTlsFactory(TLSMemoryBIOFactory):
    protocol = TerminalTlsTransport


def _openssl_reason(error: BaseException) -> str:
    """OpenSSL's reasons, without the library and function names: "peer did not return a certificate"."""
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details and all(isinstance(d, tuple) for d in details):
        return "; ".join(str(d[-1]) for d in details)
    return str(error) or error.__class__.__name__


def _peer_name(transport: Any) -> str:
    try:
        address = transport.getPeer()
    except Exception:  # a transport already gone cannot say
        return "unknown"
    host = getattr(address, "host", None)
    return f"{host}:{address.port}" if host is not None else str(address)


def _read_certificates(path: Path, key: str) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {key} {path}: {exc.strerror}") from exc
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{key} {path} is not a PEM certificate: {exc}") from exc


def _read_key(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read tls.private_key {path}: {exc.strerror}") from exc
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # Nothing of the key's content goes into the message.
        raise ValueError(f"tls.private_key {path} is not an unencrypted PEM private key "
                         f"({exc.__class__.__name__})") from None
