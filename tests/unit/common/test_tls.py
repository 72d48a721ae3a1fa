"""plexsync.common.tls without a network: what the settings must say, the dev CA's certificates, reload rules."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from plexsync.common.config import CommonSettings
from plexsync.common.tls import DevCertificateAuthority, TlsConfigError, server_credentials


def settings(**env: str) -> CommonSettings:
    return CommonSettings(**env)  # type: ignore[arg-type]


def test_plain_tcp_only_when_said_explicitly() -> None:
    with pytest.raises(TlsConfigError, match=r"no TLS certificate configured.*PLEXSYNC_GRPC_INSECURE=true"):
        server_credentials(settings())
    assert server_credentials(settings(PLEXSYNC_GRPC_INSECURE="true")) is None


def test_half_set_or_unusable_tls_settings_are_start_up_errors(tmp_path: Path) -> None:
    ca = DevCertificateAuthority(tmp_path / "ca")
    pair = ca.issue("catalog")
    other = ca.issue("auth")
    with pytest.raises(TlsConfigError, match="must be set together"):
        server_credentials(settings(PLEXSYNC_TLS_CERT_FILE=str(pair.cert_file)))
    with pytest.raises(TlsConfigError, match="needs PLEXSYNC_TLS_CA_FILE"):
        server_credentials(
            settings(
                PLEXSYNC_TLS_CERT_FILE=str(pair.cert_file),
                PLEXSYNC_TLS_KEY_FILE=str(pair.key_file),
                PLEXSYNC_TLS_CLIENT_AUTH="require",
            )
        )
    with pytest.raises(TlsConfigError, match="does not belong to the certificate"):
        server_credentials(
            settings(PLEXSYNC_TLS_CERT_FILE=str(pair.cert_file), PLEXSYNC_TLS_KEY_FILE=str(other.key_file))
        )
    with pytest.raises(TlsConfigError, match="cannot read PLEXSYNC_TLS_KEY_FILE"):
        server_credentials(
            settings(PLEXSYNC_TLS_CERT_FILE=str(pair.cert_file), PLEXSYNC_TLS_KEY_FILE=str(tmp_path / "missing.key"))
        )
    with pytest.raises(ValueError, match="PLEXSYNC_TLS_CLIENT_AUTH"):
        settings(PLEXSYNC_TLS_CLIENT_AUTH="optional")
    ok = server_credentials(
        settings(
            PLEXSYNC_TLS_CERT_FILE=str(pair.cert_file),
            PLEXSYNC_TLS_KEY_FILE=str(pair.key_file),
            PLEXSYNC_TLS_CA_FILE=str(ca.ca_file),
            PLEXSYNC_TLS_CLIENT_AUTH="require",
        )
    )
    assert ok is not None and ok.require_client_auth


def test_dev_ca_issues_server_and_client_certificates(tmp_path: Path) -> None:
    ca = DevCertificateAuthority(tmp_path)
    pair = ca.issue("scanner", hosts=["scanner.plexsync.svc", "10.0.0.7"])
    leaf, issuer = x509.load_pem_x509_certificates(pair.cert_file.read_bytes())
    assert issuer == x509.load_pem_x509_certificate(ca.ca_file.read_bytes()), "the chain carries the CA"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["scanner", "localhost", "scanner.plexsync.svc"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.0.0.7")
    ]
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert os.stat(pair.key_file).st_mode & 0o077 == 0, "keys are private to their owner"
    again = DevCertificateAuthority(tmp_path)
    assert again.ca_file.read_bytes() == ca.ca_file.read_bytes(), "an existing CA is reused, not replaced"


def test_reload_keeps_the_old_pair_until_the_new_one_is_consistent(tmp_path: Path) -> None:
    ca = DevCertificateAuthority(tmp_path)
    pair = ca.issue("catalog")
    creds = server_credentials(
        settings(PLEXSYNC_TLS_CERT_FILE=str(pair.cert_file), PLEXSYNC_TLS_KEY_FILE=str(pair.key_file))
    )
    assert creds is not None
    assert creds.fetch() is None, "unchanged files: nothing new"
    old_cert = pair.cert_file.read_bytes()
    ca.issue("catalog")
    new_cert = pair.cert_file.read_bytes()
    pair.cert_file.write_bytes(old_cert)  # a rotation caught half-way: new key, old certificate
    assert creds.fetch() is None and creds.reloads == 0
    pair.cert_file.write_bytes(new_cert)
    assert creds.fetch() is not None and creds.reloads == 1
    assert creds.fetch() is None
