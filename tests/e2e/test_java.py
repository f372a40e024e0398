"""A JVM program that knows nothing of turnout — java.net.http.HttpClient with its defaults — sent through
it by `turnout env --java` alone (JAVA_TOOL_OPTIONS: the JVM's proxy properties and a trust store with
turnout's CA and the system roots)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from conftest import turnout_cmd

CLIENT = """
import java.net.URI;
import java.net.http.*;

public class Client {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        String body = "{\\"model\\": \\"gpt-4o\\", \\"messages\\": [{\\"role\\": \\"user\\", \\"content\\": \\"hi from java\\"}]}";
        HttpRequest req = HttpRequest.newBuilder(URI.create("https://api.openai.com/v1/chat/completions"))
            .header("authorization", "Bearer sk-test-key-0001").header("content-type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body)).build();
        HttpResponse<String> r = client.send(req, HttpResponse.BodyHandlers.ofString());
        System.out.println(r.statusCode() + " " + r.body());
    }
}
"""


def test_a_java_client_with_no_proxy_code_is_recorded(proxy, tmp_path):
    java = shutil.which("java")
    if not java:
        pytest.skip("java is not installed: this test runs a JVM client")
    out = subprocess.run(
        turnout_cmd("env", "--port", str(proxy.port), "--java"), capture_output=True, text=True, check=True,
        env={**os.environ, "TURNOUT_CERTS": str(proxy.certs)},  # the CA this test's proxy signs with
    ).stdout  # fmt: skip
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0]
    assert "-Dhttps.proxyPort" in env["JAVA_TOOL_OPTIONS"]
    src = tmp_path / "Client.java"
    src.write_text(CLIENT)
    run = subprocess.run([java, str(src)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("200 ") and '"choices"' in run.stdout
    (row,) = proxy.wait_rows(1)
    assert row["requested_model"] == "gpt-4o" and row["status_code"] == 200 and row["cost_usd"] is not None
