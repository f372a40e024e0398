"""Where turnout keeps its CA, and the environment that points any program at the proxy."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Iterator

CA_KEY = "mitmproxy-ca.pem"  # the key and the certificate: its presence means the CA exists
CA_CERT = "mitmproxy-ca-cert.pem"
STAGING_PREFIX = ".new-ca-"  # where a new CA is written before it is moved in
BUNDLE = "turnout-ca-bundle.pem"


def project_root() -> Path | None:
    """The source checkout this package runs from (editable install), if any."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "certs").is_dir() else None


def certs_dir() -> Path:
    if os.environ.get("TURNOUT_CERTS"):
        return Path(os.environ["TURNOUT_CERTS"]).expanduser()
    root = project_root()
    return root / "certs" if root else Path("~/.turnout/certs").expanduser()


def system_roots() -> Path | None:
    for candidate in (
        os.environ.get("TURNOUT_SYSTEM_CA"),
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
        ssl.get_default_verify_paths().cafile,
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        return None


def create_ca(confdir: Path, basename: str = "mitmproxy") -> None:
    """Write a new CA in mitmproxy's file layout, with an ECDSA P-256 key instead of RSA-2048.

    mitmproxy signs every certificate it forges with the CA key and serves them with that key too,
    so each intercepted TLS handshake costs one signature, an order of magnitude cheaper with P-256
    than with RSA-2048. Clients that open a connection per call pay it every call.
    Every TLS client in use supports ECDSA (TLS 1.2+); an existing CA is never replaced.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from mitmproxy import certs

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, basename), x509.NameAttribute(NameOID.ORGANIZATION_NAME, basename)]
    )
    usage = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    ca = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .subject_name(name)
        .issuer_name(name)
        .not_valid_before(now + certs.CERT_VALIDITY_OFFSET)
        .not_valid_after(now + certs.CERT_VALIDITY_OFFSET + certs.CA_EXPIRY)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_cert = ca.public_bytes(serialization.Encoding.PEM)

    def p12(with_key: bool) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            basename.encode(), key if with_key else None, ca, None, serialization.NoEncryption()
        )

    key_file = f"{basename}-ca.pem"
    files = {  # what mitmproxy's CertStore.create_store writes, under the same names and modes
        f"{basename}-ca.p12": (p12(True), 0o600),
        f"{basename}-ca-cert.pem": (pem_cert, 0o644),
        f"{basename}-ca-cert.cer": (pem_cert, 0o644),
        f"{basename}-ca-cert.p12": (p12(False), 0o644),
        f"{basename}-dhparam.pem": (certs.DEFAULT_DHPARAM, 0o644),
        key_file: (pem_key + pem_cert, 0o600),  # last: once it is in place, the CA is complete
    }
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=confdir))
    try:
        for fname, (data, mode) in files.items():
            fd = os.open(staging / fname, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for fname in files:
            os.replace(staging / fname, confdir / fname)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_ca(confdir: Path | None = None) -> tuple[Path, Path]:
    """Create the CA (first use) and the bundle of system roots plus it; return (ca_cert, bundle)."""
    from mitmproxy import certs

    confdir = confdir or certs_dir()
    confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(confdir, 0o700)
    with _exclusive(confdir / ".lock"):  # `turnout run`s starting together must not write two CAs at once
        for stale in confdir.glob(f"{STAGING_PREFIX}*"):  # a start killed mid-write: it may hold a key
            shutil.rmtree(stale, ignore_errors=True)
        if not (confdir / CA_KEY).exists():
            create_ca(confdir)
        certs.CertStore.from_store(str(confdir), "mitmproxy", 2048)  # loads it, and checks it loads (2048: unused)
        ca = confdir / CA_CERT
        bundle = confdir / BUNDLE
        roots = system_roots()
        text = (roots.read_text() if roots else "") + "\n# turnout CA\n" + ca.read_text()
        if not bundle.exists() or bundle.read_text() != text:
            tmp = bundle.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(bundle)
    return ca, bundle


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


NODE_PRELOAD = Path(__file__).with_name("node") / "preload.cjs"
TRUSTSTORE = "turnout-truststore.p12"
TRUSTSTORE_PASSWORD = "changeit"  # Java's conventional one: the store holds public certificates only


def node_options(existing: str | None) -> str:
    """NODE_OPTIONS with turnout's preload (fetch through the proxy on Node < 22.21), keeping the user's own."""
    path = str(NODE_PRELOAD)
    require = f'--require "{path}"' if " " in path else f"--require {path}"
    existing = (existing or "").strip()
    if path in existing:
        return existing
    return f"{require} {existing}".strip()


def proxy_env(host: str, port: int, bundle: Path, *, java: bool = False) -> dict[str, str]:
    """The environment that points a program at the proxy. `java`: also JAVA_TOOL_OPTIONS (proxy properties
    and a trust store holding turnout's CA), which every JVM reads — and announces on stderr."""
    proxy_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    url = f"http://{proxy_host}:{port}"
    env = {
        "HTTPS_PROXY": url,
        "HTTP_PROXY": url,
        "https_proxy": url,
        "http_proxy": url,
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        **trust_env(bundle),
        "NODE_USE_ENV_PROXY": "1",
        "NODE_OPTIONS": node_options(os.environ.get("NODE_OPTIONS")),
    }
    if java:
        env["JAVA_TOOL_OPTIONS"] = " ".join(
            [
                f"-Dhttps.proxyHost={proxy_host}", f"-Dhttps.proxyPort={port}",
                f"-Dhttp.proxyHost={proxy_host}", f"-Dhttp.proxyPort={port}",
                *java_trust_options(bundle),
            ]
        )  # fmt: skip
    return env


def trust_env(bundle: Path, *, java: bool = False) -> dict[str, str]:
    """The variables that make clients trust the bundle, without pointing them at a proxy (for
    `turnout run --transparent`, where the network sends them to it)."""
    env = {
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
        "NODE_EXTRA_CA_CERTS": str(bundle),
    }
    if java:
        env["JAVA_TOOL_OPTIONS"] = " ".join(java_trust_options(bundle))
    return env


def java_trust_options(bundle: Path) -> list[str]:
    store = ensure_truststore(bundle)
    return [
        f"-Djavax.net.ssl.trustStore={store}",
        "-Djavax.net.ssl.trustStoreType=PKCS12",
        f"-Djavax.net.ssl.trustStorePassword={TRUSTSTORE_PASSWORD}",
    ]


def ensure_truststore(bundle: Path) -> Path:
    """A Java trust store (PKCS12) of the bundle's certificates — the system roots and turnout's CA — so a
    JVM trusts turnout's certificates for provider hosts and the real ones for everything it tunnels."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.utils import CryptographyDeprecationWarning

    store = bundle.with_name(TRUSTSTORE)
    stamp = bundle.with_name(TRUSTSTORE + ".source")
    text = bundle.read_text()
    if store.exists() and stamp.exists() and stamp.read_text() == text:
        return store
    with warnings.catch_warnings():  # a system root with a non-positive serial: the JVM's concern, not the user's
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        loaded = x509.load_pem_x509_certificates(text.encode())
    certs = []
    for i, cert in enumerate(loaded):
        name = cert.subject.rfc4514_string() or f"cert{i}"
        certs.append(pkcs12.PKCS12Certificate(cert, f"{i:03d} {name}"[:200].encode()))
    data = pkcs12.serialize_java_truststore(certs, serialization.BestAvailableEncryption(TRUSTSTORE_PASSWORD.encode()))
    tmp = store.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(store)
    stamp.write_text(text)
    return store


def exports(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
