'use strict'
// turnout's Node preload (NODE_OPTIONS=--require …, set by `turnout env` and `turnout run`): makes the
// runtime's fetch go through HTTPS_PROXY on Node versions whose fetch ignores it (before 22.21 and 24),
// by installing undici's EnvHttpProxyAgent as the global dispatcher, which the runtime's bundled undici
// shares (Symbol.for('undici.globalDispatcher.1')). Newer runtimes honour NODE_USE_ENV_PROXY themselves:
// there it does nothing. The CA bundle comes from NODE_EXTRA_CA_CERTS, which Node's TLS already trusts.
// vendor/undici-proxy.cjs is undici 6 (MIT, see vendor/LICENSE-undici), bundled by scripts/vendor_undici.

function honoursEnvProxy (version) {
  const [major, minor] = version.split('.').map(Number)
  return major >= 24 || (major === 22 && minor >= 21)
}

function install () {
  const env = process.env
  if (typeof globalThis.fetch !== 'function') return 'no fetch'
  if (honoursEnvProxy(process.versions.node) && env.NODE_USE_ENV_PROXY === '1') return 'native'
  if (!(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy)) return 'no proxy set'
  const { EnvHttpProxyAgent, setGlobalDispatcher } = require('./vendor/undici-proxy.cjs')
  // undici 6 calls EnvHttpProxyAgent experimental and says so on stderr in every process: not for this use
  const emitWarning = process.emitWarning
  process.emitWarning = function (warning, ...rest) {
    if (!String(warning).startsWith('EnvHttpProxyAgent is experimental')) return emitWarning.call(process, warning, ...rest)
  }
  try {
    setGlobalDispatcher(new EnvHttpProxyAgent())
  } finally {
    process.emitWarning = emitWarning
  }
  return 'installed'
}

try {
  module.exports = { honoursEnvProxy, state: install() }
} catch (e) {
  // never break the user's program: without the dispatcher its calls go direct, as they would have
  process.stderr.write(`turnout preload: could not make fetch use the proxy: ${e && e.message}\n`)
  module.exports = { honoursEnvProxy, state: 'failed' }
}
