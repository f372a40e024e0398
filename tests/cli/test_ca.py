"""turnout's CA: ECDSA P-256 in mitmproxy's file layout, loaded and used by mitmproxy as its own."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mitmproxy import certs

from turnout.cli import environment


def test_new_ca_is_p256_and_mitmproxy_forges_certificates_with_it(tmp_path: Path) -> None:
    confdir = tmp_path / "certs"
    ca_cert, bundle = environment.ensure_ca(confdir)
    names = {p.name for p in confdir.iterdir()}
    assert {"mitmproxy-ca.pem", "mitmproxy-ca.p12", "mitmproxy-ca-cert.pem", "mitmproxy-ca-cert.cer",
            "mitmproxy-ca-cert.p12", "mitmproxy-dhparam.pem"} <= names  # fmt: skip
    assert stat.S_IMODE((confdir / "mitmproxy-ca.pem").stat().st_mode) == 0o600  # the private key
    assert stat.S_IMODE((confdir / "mitmproxy-ca.p12").stat().st_mode) == 0o600  # the key again
    assert not [p for p in confdir.iterdir() if p.name.startswith(".new-ca-")]  # nothing left of the staging
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    store = certs.CertStore.from_store(confdir, "mitmproxy", 2048)
    entry = store.get_cert("api.openai.com", [x509.DNSName("api.openai.com")])
    leaf = entry.cert._cert
    leaf.verify_directly_issued_by(ca)  # signed by the CA key
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "api.openai.com"

    # a TLS client trusting the bundle (as the SDKs do via SSL_CERT_FILE) completes a handshake with it
    (tmp_path / "leaf.pem").write_bytes(entry.cert.to_pem())
    (tmp_path / "leaf.key").write_bytes((confdir / "mitmproxy-ca.pem").read_bytes())  # mitmproxy serves with the CA key
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client_ctx = ssl.create_default_context(cafile=str(bundle))
    assert handshake(client_ctx, server_ctx, "api.openai.com")["subject"] == ((("commonName", "api.openai.com"),),)


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, host: str) -> dict:
    """A TLS handshake in memory; returns the certificate the client verified."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=host)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    done = {id(client): False, id(server): False}
    for _ in range(10):
        for side in (client, server):
            if not done[id(side)]:
                try:
                    side.do_handshake()
                    done[id(side)] = True
                except ssl.SSLWantReadError:
                    pass
        bios[2].write(bios[1].read())  # client → server
        bios[0].write(bios[3].read())  # server → client
        if all(done.values()):
            break
    assert all(done.values())
    return client.getpeercert()


def test_a_start_killed_while_writing_leaves_no_key_behind(tmp_path: Path) -> None:
    confdir = tmp_path / "certs"
    left = confdir / f"{environment.STAGING_PREFIX}abc123"
    left.mkdir(parents=True)
    (left / "mitmproxy-ca.pem").write_text("half a key")
    environment.ensure_ca(confdir)
    assert not left.exists()
    assert b"half a key" not in (confdir / "mitmproxy-ca.pem").read_bytes()


def test_an_existing_ca_is_kept(tmp_path: Path) -> None:
    confdir = tmp_path / "certs"
    certs.CertStore.create_store(confdir, "mitmproxy", 2048)  # e.g. made by an earlier turnout, RSA
    before = (confdir / "mitmproxy-ca.pem").read_bytes()
    ca_cert, _ = environment.ensure_ca(confdir)
    assert (confdir / "mitmproxy-ca.pem").read_bytes() == before
    assert isinstance(x509.load_pem_x509_certificate(ca_cert.read_bytes()).public_key(), rsa.RSAPublicKey)


def _ensure(confdir: str) -> str:
    return str(environment.ensure_ca(Path(confdir))[0])


def test_processes_starting_together_end_with_one_consistent_ca(tmp_path: Path) -> None:
    import multiprocessing

    confdir = tmp_path / "certs"
    old = os.umask(0o022)  # the usual one, inherited by the processes below
    try:
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(_ensure, [str(confdir)] * 8)
    finally:
        os.umask(old)
    key = serialization.load_pem_private_key((confdir / "mitmproxy-ca.pem").read_bytes(), None)
    for name in ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-ca-cert.cer"):
        cert = x509.load_pem_x509_certificate((confdir / name).read_bytes())
        assert cert.public_key() == key.public_key(), name  # every file describes the same CA
    assert stat.S_IMODE((confdir / "mitmproxy-ca-cert.pem").stat().st_mode) == 0o644  # clients read it
    assert stat.S_IMODE((confdir / "mitmproxy-ca.pem").stat().st_mode) == 0o600  # only the key is private
