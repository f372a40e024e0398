"""`turnout run --transparent`: curl with no proxy setting and no CA setting at all, in the namespace
turnout makes, is intercepted and recorded; a TLS connection to a host that is not a provider goes
through untouched (its own certificate, its own answer); nothing of the namespace is left afterwards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import signal
from pathlib import Path

import pytest
from certificates import self_signed  # tests/certificates.py

from conftest import turnout_cmd

PROXY_VARS = {"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
              "no_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"}  # fmt: skip


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("turnout run --transparent needs root (a network namespace, iptables, a bind mount); not root here")
    for tool in ("ip", "iptables", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/ensure-servers installs iptables with apt-get as root)")


def other_https_server(cert: Path, key: Path) -> socket.socket:
    """A TLS server on port 443 of every host address, answering a fixed HTTP response: not a provider."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(("0.0.0.0", 443))
    except OSError as e:
        pytest.skip(f"port 443 is taken here ({e}): the tunnel check needs a server on it")
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\nnot a model")
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return srv


def leftovers() -> tuple[list[str], list[str]]:
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("iptables")):
        return [], []  # nothing could have been made
    netns = [ln.split()[0] for ln in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
             if ln.startswith("turnout-")]  # fmt: skip
    rules = [
        ln for table in ("nat", "filter")
        for ln in subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout.splitlines()
        if "tnh" in ln
    ]  # fmt: skip
    return netns, rules


def test_a_client_with_no_proxy_setting_is_intercepted_and_recorded(tmp_path, certs_dir, upstream):
    needs_root()
    cert, key = self_signed(tmp_path, ("other.example",))
    srv = other_https_server(cert, key)
    db = tmp_path / "t.db"
    # In the namespace: no proxy variable, no CA variable (the system store is turnout's bundle there),
    # and the provider's name resolved to an address nobody serves: only a redirect can answer it.
    script = tmp_path / "client.sh"
    script.write_text(
        "set -e\n"
        "unset SSL_CERT_FILE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE\n"
        "curl -sS --max-time 20 --resolve api.openai.com:443:203.0.113.7 https://api.openai.com/v1/chat/completions"
        " -H 'authorization: Bearer sk-transparent-0001' -H 'content-type: application/json'"
        ' -d \'{"model": "gpt-4o", "messages": [{"role": "user", "content": "no proxy here"}]}\'\n'
        "echo\n"
        "gw=$(ip route | awk '/^default/ {print $3}')\n"
        f"curl -sS --max-time 20 --cacert {cert} --resolve other.example:443:$gw https://other.example/\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS} | {"TURNOUT_CERTS": str(certs_dir)}
    try:
        out = subprocess.run(
            turnout_cmd("run", "--transparent", "--db", str(db), "--upstream", upstream.url, "--", "sh", str(script)),
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        srv.close()
    assert out.returncode == 0, out.stdout + out.stderr
    first, second = out.stdout.strip().splitlines()
    assert "echo from gpt-4o: no proxy here" in first  # intercepted, sent to the test server
    assert second == "not a model"  # tunnelled untouched: the other host's own certificate verified
    assert "1 LLM call(s)" in out.stderr
    conn = sqlite3.connect(db)
    rows = conn.execute("select * from flows").fetchall()
    names = [d[0] for d in conn.execute("select * from flows").description]
    conn.close()
    assert len(rows) == 1
    row = dict(zip(names, rows[0]))
    assert (row["provider"], row["host"], row["model"], row["status_code"]) == (
        "openai",
        "api.openai.com",
        "gpt-4o",
        200,
    )
    assert row["api_key_fp"] and "sk-transparent-0001" not in repr(rows[0])  # a fingerprint, never the key
    assert leftovers() == ([], [])  # namespace, veth pair and every rule gone


def test_without_root_it_says_what_it_needs(tmp_path, certs_dir):
    # as root, the command drops its effective uid first (its modules already loaded): refused the same way
    code = (
        "import os, sys; import turnout.cli.main as m, turnout.cli.proxy, turnout.cli.transparent\n"
        "m.build_parser()\n"  # every command module imported while it can be read
        "if os.geteuid() == 0: os.seteuid(65534)\n"
        "sys.exit(m.main(sys.argv[1:]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "run", "--transparent", "--", "true"],
        env={**os.environ, "TURNOUT_CERTS": str(certs_dir)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "needs root" in out.stderr and "CAP_NET_ADMIN" in out.stderr, out.stderr
    assert leftovers() == ([], [])


def test_sigterm_to_turnout_run_ends_the_command_and_leaves_nothing(tmp_path, certs_dir, upstream):
    needs_root()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS} | {"TURNOUT_CERTS": str(certs_dir)}
    run = subprocess.Popen(
        turnout_cmd("run", "--transparent", "--db", str(tmp_path / "t.db"), "--upstream", upstream.url, "--",
                    "sleep", "60"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while leftovers()[1] == [] or not any("REDIRECT" in r for r in leftovers()[1]):
        assert run.poll() is None and time.monotonic() < deadline, "the namespace never came up"
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    rc = run.wait(60)
    assert rc == -signal.SIGTERM or rc == 128 + signal.SIGTERM, (rc, run.stderr.read() if run.stderr else "")
    assert leftovers() == ([], [])


def test_the_node_sdk_with_no_proxy_support_at_all_is_recorded(tmp_path, certs_dir, upstream):
    """Node 20's fetch, without turnout's preload and without any proxy variable: it dials the provider
    directly, and the namespace's redirect brings the call, its stream and its error to turnout."""
    needs_root()
    from test_node_sdk import SCRIPT, SDK, node

    binary = node()
    (tmp_path / "client.js").write_text(SCRIPT)
    hosts = tmp_path / "hosts"  # the provider's name at an address nobody serves (there is no DNS here)
    hosts.write_text("127.0.0.1 localhost\n203.0.113.7 api.openai.com\n")
    script = tmp_path / "client.sh"
    script.write_text(f"mount --bind {hosts} /etc/hosts && exec {binary} {tmp_path / 'client.js'} {SDK}\n")
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != "NODE_OPTIONS"}
    env |= {"TURNOUT_CERTS": str(certs_dir), "OPENAI_API_KEY": "sk-test-key-0001"}
    db = tmp_path / "t.db"
    out = subprocess.run(
        turnout_cmd("run", "--transparent", "--db", str(db), "--upstream", upstream.url, "--", "sh", str(script)),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.get("plain") and result.get("stream") and result.get("error") == 400, result
    conn = sqlite3.connect(db)
    rows = conn.execute("select requested_model, status_code, stream from flows order by started_at").fetchall()
    conn.close()
    assert rows == [("gpt-4o", 200, 0), ("gpt-4o-mini", 200, 1), ("error-400", 400, 0)]
