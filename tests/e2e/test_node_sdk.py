"""The official Node SDK (npm `openai`, pinned by scripts/ensure-node-sdk) on this machine's Node, with
only what `turnout env` prints in its environment: a call, a stream and an error reach the test server
through turnout and land in the ledger. On Node 20 that takes turnout's preload (NODE_OPTIONS), since
its fetch reads neither HTTPS_PROXY nor NODE_USE_ENV_PROXY."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT as REPO

SDK = REPO / ".cache" / "node-sdk" / "node_modules" / "openai"
PRELOAD = REPO / "cli" / "node" / "preload.cjs"

SCRIPT = r"""
const OpenAI = require(process.argv[2]);
const client = new OpenAI({ maxRetries: 0, timeout: 20000 });
const messages = [{ role: 'user', content: 'hello from node' }];
(async () => {
  const out = {};
  try {
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages });
    out.plain = r.choices[0].message.content;
    const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
    let text = '';
    for await (const chunk of stream) text += (chunk.choices[0] && chunk.choices[0].delta.content) || '';
    out.stream = text;
    try {
      await client.chat.completions.create({ model: 'error-400', messages });
    } catch (e) {
      out.error = e.status;
    }
  } catch (e) {
    out.failed = String(e && e.message);
  }
  console.log(JSON.stringify(out));
})();
"""


def node() -> str:
    found = shutil.which("node")
    if not found:
        pytest.skip("node is not installed: the Node SDK tests need it")
    if not (SDK / "package.json").exists():
        pytest.skip("the Node SDK is not installed: scripts/ensure-node-sdk installs it (scripts/test runs it)")
    return found


def run_node(env: dict[str, str], tmp_path: Path) -> dict:
    script = tmp_path / "client.js"
    script.write_text(SCRIPT)
    out = subprocess.run([node(), str(script), str(SDK)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def only_turnout_env(proxy) -> dict[str, str]:
    """The environment a user has after `eval "$(turnout env)"`: PATH, HOME and the key, nothing else."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **proxy.env,
            "OPENAI_API_KEY": "sk-test-key-0001"}  # fmt: skip


def test_the_node_sdk_reaches_turnout_with_only_turnout_env(proxy, tmp_path):
    version = subprocess.run([node(), "--version"], capture_output=True, text=True).stdout.strip()
    assert "preload.cjs" in proxy.env["NODE_OPTIONS"]
    out = run_node(only_turnout_env(proxy), tmp_path)
    assert out.get("plain") and out.get("stream") and out.get("error") == 400, (version, out)
    rows = proxy.wait_rows(3)
    assert [(r["requested_model"], r["status_code"], r["stream"]) for r in rows] == [
        ("gpt-4o", 200, 0), ("gpt-4o-mini", 200, 1), ("error-400", 400, 0),
    ], version  # fmt: skip
    assert rows[1]["completion_tokens"] and rows[0]["cost_usd"] is not None


def test_without_the_preload_node_20_fetch_goes_around_the_proxy(proxy, tmp_path):
    """The control: what the preload fixes (on Node that honours NODE_USE_ENV_PROXY, the call works anyway)."""
    version = subprocess.run([node(), "-p", "process.versions.node"], capture_output=True, text=True).stdout.strip()
    env = only_turnout_env(proxy)
    env.pop("NODE_OPTIONS")
    out = run_node(env, tmp_path)
    native = subprocess.run(
        [node(), "-p", f"require({json.dumps(str(PRELOAD))}).honoursEnvProxy(process.versions.node)"],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]},
    ).stdout.strip()  # fmt: skip
    if native == "true":
        assert out.get("plain"), (version, out)
    else:
        assert "failed" in out and not proxy.rows(), (version, out)


def test_the_preload_stands_aside_where_node_honours_the_proxy_itself():
    probe = f"const p = require({json.dumps(str(PRELOAD))}); console.log(JSON.stringify(" + (
        "['18.20.0', '20.20.2', '22.20.0', '22.21.0', '23.11.0', '24.0.0', '25.1.0'].map(p.honoursEnvProxy)))"
    )
    out = subprocess.run([node(), "-e", probe], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert json.loads(out.stdout) == [False, False, False, True, False, True, True]
