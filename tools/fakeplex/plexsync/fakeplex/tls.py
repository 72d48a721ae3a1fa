"""A certificate like a real Plex Media Server's, made at start-up: ``*.<hash>.plex.direct`` plus IP SANs.

Real servers get a publicly trusted certificate for ``*.<hash>.plex.direct``; fakeplex signs its own with a
throw-away CA whose certificate it writes to a file, so a client can be told to trust exactly that CA (the
auth service's ``PLEXSYNC_PLEX_CA_BUNDLE``). EC P-256 keys: generating both takes a few milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Where the generated files are: ``ca_file`` is what a client trusts; cert + key are the server's."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    plex_direct_domain: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _ip_sans(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in ["127.0.0.1", *hosts]:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            continue
        if str(ip) not in seen:
            seen.add(str(ip))
            out.append(x509.IPAddress(ip))
    return out


def generate(directory: Path, *, plex_direct_hash: str, hosts: list[str], ca_file: Path | None = None) -> TlsMaterial:
    """Write ``ca.pem`` (or ``ca_file``), ``server.pem`` (leaf + CA chain) and ``server.key`` and return them."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=30)
    domain = f"{plex_direct_hash}.plex.direct"

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakeplex test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(f"*.{domain}"), *_ip_sans(hosts)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{domain}")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    ca_path = ca_file or directory / "ca.pem"
    ca_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ca_path.with_name(ca_path.name + ".tmp")
    tmp.write_bytes(ca_pem)
    tmp.replace(ca_path)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(pem) + ca_pem)
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return TlsMaterial(ca_path, cert_path, key_path, domain)
