"""Self-signed certificates for the tests' own TLS servers (the HTTP/2 provider, hosts turnout must
tunnel untouched) and the benchmark's HTTPS provider: each is its own CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path


def self_signed(dir_: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1"), stem: str = "") -> tuple[Path, Path]:
    """(certificate, key) in dir_ for the given host names and IP addresses (the first is the subject)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def san(n: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(n))
        except ValueError:
            return x509.DNSName(n)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    dir_.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = dir_ / f"{stem}cert.pem", dir_ / f"{stem}key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file
