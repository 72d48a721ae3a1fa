"""TLS for plexsync's gRPC traffic: server credentials that follow their files, client credentials, a dev CA.

A service serves TLS when ``PLEXSYNC_TLS_CERT_FILE`` and ``PLEXSYNC_TLS_KEY_FILE`` are set; ``PLEXSYNC_TLS_CA_FILE``
is the CA its clients verify peers against (and, with ``PLEXSYNC_TLS_CLIENT_AUTH=require``, the CA a caller's
certificate must chain to). Plain TCP needs ``PLEXSYNC_GRPC_INSECURE=true``: an unset certificate is a start-up
error, never a silent downgrade. The files are re-read when they change (a Kubernetes Secret or cert-manager
rotation swaps them in place), so new handshakes see the new certificate without a restart; the same goes for the
certificate a client presents and the CA it trusts (`plexsync.common.clients.ReloadingChannel`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from plexsync.common.config import CommonSettings

log = logging.getLogger(__name__)

INSECURE_HINT = (
    "set PLEXSYNC_TLS_CERT_FILE and PLEXSYNC_TLS_KEY_FILE (and PLEXSYNC_TLS_CA_FILE), or PLEXSYNC_GRPC_INSECURE=true "
    "to serve plain TCP on purpose"
)


class TlsConfigError(RuntimeError):
    """The TLS settings are missing, inconsistent or point at unusable files (a start-up error)."""


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TlsConfigError(f"{what} {path} is empty")
    return data


def check_key_pair(cert_pem: bytes, key_pem: bytes, where: str) -> None:
    """Raise TlsConfigError unless `key_pem` is the private key of the first certificate in `cert_pem`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsConfigError(f"{where}: the certificate file holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsConfigError(f"{where}: the key file holds no unencrypted PEM private key") from None
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise TlsConfigError(f"{where}: the private key does not belong to the certificate")


def check_ca(ca_pem: bytes, where: str) -> None:
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise TlsConfigError(f"{where}: the CA file holds no PEM certificate") from None


def files_signature(*paths: str) -> tuple[tuple[int, int, int], ...]:
    """(mtime_ns, size, inode) of each set path: a stat each, no reading. Raises OSError for a missing file."""
    out: list[tuple[int, int, int]] = []
    for path in paths:
        if not path:
            continue
        st = os.stat(path)
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Loaded:
    signature: tuple[tuple[int, int, int], ...]
    config: grpc.ServerCertificateConfiguration


class ReloadingServerCredentials:
    """Server credentials whose certificate, key and client CA are re-read when one of the files changes.

    gRPC asks `fetch` before every new handshake; a stat of three files is cheap, and only a changed size, mtime or
    inode (a Secret's symlink swap) reads them again. A half-written rotation (key not matching the certificate
    yet) keeps the previous, working configuration until the files agree; established connections keep theirs."""

    def __init__(self, cert_file: str, key_file: str, ca_file: str = "", *, require_client_auth: bool = False) -> None:
        if require_client_auth and not ca_file:
            raise TlsConfigError("PLEXSYNC_TLS_CLIENT_AUTH=require needs PLEXSYNC_TLS_CA_FILE (the CA of the callers)")
        self.cert_file, self.key_file, self.ca_file = cert_file, key_file, ca_file
        self.require_client_auth = require_client_auth
        self._lock = threading.Lock()
        self._current = self._load()
        self.reloads = 0

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        return files_signature(self.cert_file, self.key_file, self.ca_file)

    def _load(self) -> _Loaded:
        try:
            signature = self._signature()
        except OSError as exc:
            names = {self.cert_file: "PLEXSYNC_TLS_CERT_FILE", self.key_file: "PLEXSYNC_TLS_KEY_FILE"}
            what = names.get(str(exc.filename), "PLEXSYNC_TLS_CA_FILE")
            raise TlsConfigError(f"cannot read {what} {exc.filename}: {exc.strerror}") from None
        cert = _read(self.cert_file, "PLEXSYNC_TLS_CERT_FILE")
        key = _read(self.key_file, "PLEXSYNC_TLS_KEY_FILE")
        check_key_pair(cert, key, "PLEXSYNC_TLS_CERT_FILE/PLEXSYNC_TLS_KEY_FILE")
        ca: bytes | None = None
        if self.ca_file:
            ca = _read(self.ca_file, "PLEXSYNC_TLS_CA_FILE")
            check_ca(ca, "PLEXSYNC_TLS_CA_FILE")
        config = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
        return _Loaded(signature, config)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback: a new configuration when the files changed and are consistent, else None (keep)."""
        with self._lock:
            try:
                if self._signature() == self._current.signature:
                    return None
                loaded = self._load()
            except (OSError, TlsConfigError) as exc:
                log.warning(
                    "TLS files changed but cannot be used yet; keeping the previous ones", extra={"error": str(exc)}
                )
                return None
            self._current = loaded
            self.reloads += 1
        log.info("TLS certificate reloaded", extra={"cert_file": self.cert_file})
        return loaded.config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current.config, self.fetch, require_client_authentication=self.require_client_auth
        )


def server_credentials(settings: CommonSettings) -> ReloadingServerCredentials | None:
    """The service's TLS credentials, or None when PLEXSYNC_GRPC_INSECURE=true and no certificate is set.

    Raises TlsConfigError when neither is configured, or when the TLS settings are half set or unusable."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if bool(cert) != bool(key):
        raise TlsConfigError("PLEXSYNC_TLS_CERT_FILE and PLEXSYNC_TLS_KEY_FILE must be set together")
    if not cert:
        if settings.grpc_insecure:
            return None
        raise TlsConfigError(f"no TLS certificate configured: {INSECURE_HINT}")
    return ReloadingServerCredentials(
        cert, key, settings.tls_ca_file, require_client_auth=settings.tls_client_auth == "require"
    )


def channel_credentials_from_files(ca_file: str, cert_file: str = "", key_file: str = "") -> grpc.ChannelCredentials:
    """Client credentials trusting `ca_file`, presenting `cert_file`/`key_file` (for mTLS) when given."""
    ca = _read(ca_file, "PLEXSYNC_TLS_CA_FILE")
    check_ca(ca, "PLEXSYNC_TLS_CA_FILE")
    if bool(cert_file) != bool(key_file):
        raise TlsConfigError("PLEXSYNC_TLS_CERT_FILE and PLEXSYNC_TLS_KEY_FILE must be set together")
    if not cert_file:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    cert = _read(cert_file, "PLEXSYNC_TLS_CERT_FILE")
    key = _read(key_file, "PLEXSYNC_TLS_KEY_FILE")
    check_key_pair(cert, key, "PLEXSYNC_TLS_CERT_FILE/PLEXSYNC_TLS_KEY_FILE")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def client_credentials(settings: CommonSettings) -> grpc.ChannelCredentials | None:
    """Credentials for calls to peers: TLS when PLEXSYNC_TLS_CA_FILE is set (with this process's certificate as the
    client certificate when it has one), None for plain TCP. Read once: `clients.peer_channel` re-reads the files
    when they change (`clients.ReloadingChannel`)."""
    if not settings.tls_ca_file:
        return None
    return channel_credentials_from_files(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)


def env_credentials(env: dict[str, str]) -> grpc.ChannelCredentials | None:
    """Client credentials from an environment mapping (a child process's), as `client_credentials` reads them."""
    ca = env.get("PLEXSYNC_TLS_CA_FILE", "")
    if not ca:
        return None
    return channel_credentials_from_files(
        ca, env.get("PLEXSYNC_TLS_CERT_FILE", ""), env.get("PLEXSYNC_TLS_KEY_FILE", "")
    )


# ---------------------------------------------------------------------------------------------------- dev CA
@dataclass(frozen=True, slots=True)
class CertPair:
    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically (rename), key files readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class DevCertificateAuthority:
    """A throw-away CA in `directory` (``ca.pem``, ``ca.key``) that issues service and client certificates.

    For the dev stack and tests only: the CA key sits next to the certificates. Loaded when it exists, created
    otherwise; EC P-256 keys, so issuing a certificate takes milliseconds."""

    def __init__(self, directory: Path, *, common_name: str = "plexsync dev CA") -> None:
        self.directory = directory
        self.ca_file = directory / "ca.pem"
        self._ca_key_file = directory / "ca.key"
        directory.mkdir(parents=True, exist_ok=True)
        if self.ca_file.exists() and self._ca_key_file.exists():
            self._cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self._ca_key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TlsConfigError(f"{self._ca_key_file} is not an EC key")
            self._key = key
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        _write_private(self._ca_key_file, _key_pem(self._key))
        _write_private(self.ca_file, self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        hosts: Sequence[str] = (),
        days: float = 90,
        directory: Path | None = None,
    ) -> CertPair:
        """Write ``<name>.pem`` (leaf + CA) and ``<name>.key``: a certificate for `name` good as a server and as a
        client, with SANs for `name`, localhost, 127.0.0.1, ::1 and `hosts` (DNS names or IP addresses)."""
        out = directory or self.directory
        out.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        seen: set[str] = set()
        for host in (name, "localhost", "127.0.0.1", "::1", *hosts):
            if host in seen:
                continue
            seen.add(host)
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        now = dt.datetime.now(dt.UTC)
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pair = CertPair(out / f"{name}.pem", out / f"{name}.key")
        pem = serialization.Encoding.PEM
        # Key first: a reloading server that sees the new certificate before its key waits for the pair to agree.
        _write_private(pair.key_file, _key_pem(key))
        _write_private(pair.cert_file, cert.public_bytes(pem) + self._cert.public_bytes(pem))
        return pair


# Plain TCP, said explicitly; the blanks keep TLS files exported in a developer's shell from reaching the process.
PLAIN_TCP_ENV = {
    "PLEXSYNC_GRPC_INSECURE": "true",
    "PLEXSYNC_TLS_CA_FILE": "",
    "PLEXSYNC_TLS_CERT_FILE": "",
    "PLEXSYNC_TLS_KEY_FILE": "",
    "PLEXSYNC_TLS_CLIENT_AUTH": "none",
}


def tls_env(ca_file: Path, pair: CertPair | None = None, *, client_auth: bool = False) -> dict[str, str]:
    """The PLEXSYNC_TLS_* variables for a process that trusts `ca_file` and presents `pair` (server and client)."""
    return {
        "PLEXSYNC_GRPC_INSECURE": "false",
        "PLEXSYNC_TLS_CA_FILE": str(ca_file),
        "PLEXSYNC_TLS_CERT_FILE": str(pair.cert_file) if pair else "",
        "PLEXSYNC_TLS_KEY_FILE": str(pair.key_file) if pair else "",
        "PLEXSYNC_TLS_CLIENT_AUTH": "require" if client_auth else "none",
    }
