"""A throwaway certificate authority for the dev mesh and the tests (``dev up --tls``).

Production brings its own certificates; this makes a CA and server certificates valid for
the loopback names, so ``sslmode=verify-full`` and ``ssl_cert_reqs=required`` check something
real. Private keys are written with their final mode (0600) and never leave their folder.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from regionmesh.safefs import create_private_file

VALID_DAYS = 30


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regionmesh dev"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, owner: str | None) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    create_private_file(path, pem, owner=owner)


def _write_cert(path: Path, cert: x509.Certificate, owner: str | None) -> None:
    create_private_file(path, cert.public_bytes(serialization.Encoding.PEM), owner=owner, mode=0o644)


def make_ca(folder: Path, common_name: str = "regionmesh dev CA") -> CertPair:
    """A self-signed CA in ``folder`` (``ca.crt``, ``ca.key``); fails if they exist."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    pair = CertPair(folder / "ca.crt", folder / "ca.key")
    _write_key(pair.key, key, None)
    _write_cert(pair.cert, cert, None)
    return pair


def make_server_cert(
    ca: CertPair, folder: Path, name: str, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    owner: str | None = None,
) -> CertPair:
    """``<name>.crt`` / ``<name>.key`` in ``folder``, signed by ``ca``, valid for ``hosts``
    (IP addresses and DNS names); owned by ``owner`` (a server that must read its key)."""
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pair = CertPair(folder / f"{name}.crt", folder / f"{name}.key")
    _write_key(pair.key, key, owner)
    _write_cert(pair.cert, cert, owner)
    return pair


def copy_public(source: Path, target: Path, *, owner: str | None = None) -> Path:
    """Copy a certificate (public) to where another user's server can read it."""
    create_private_file(target, source.read_bytes(), owner=owner, mode=0o644)
    return target
