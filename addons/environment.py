"""Where turnout keeps its CA, and the environment that points any program at the proxy."""

from __future__ import annotations

import os
import shlex
import ssl
from pathlib import Path

CA_CERT = "mitmproxy-ca-cert.pem"
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


def ensure_ca(confdir: Path | None = None) -> tuple[Path, Path]:
    """Create the CA (first use) and the bundle of system roots plus it; return (ca_cert, bundle)."""
    from mitmproxy import certs

    confdir = confdir or certs_dir()
    confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(confdir, 0o700)
    certs.CertStore.from_store(str(confdir), "mitmproxy", 2048)
    ca = confdir / CA_CERT
    bundle = confdir / BUNDLE
    roots = system_roots()
    text = (roots.read_text() if roots else "") + "\n# turnout CA\n" + ca.read_text()
    if not bundle.exists() or bundle.read_text() != text:
        tmp = bundle.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(bundle)
    return ca, bundle


def proxy_env(host: str, port: int, bundle: Path) -> dict[str, str]:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '', '::') else host}:{port}"
    return {
        "HTTPS_PROXY": url,
        "HTTP_PROXY": url,
        "https_proxy": url,
        "http_proxy": url,
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
        "NODE_EXTRA_CA_CERTS": str(bundle),
        "NODE_USE_ENV_PROXY": "1",
    }


def exports(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
