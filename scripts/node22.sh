#!/usr/bin/env bash
# Runs a command with Node >= 22.12 first on PATH. wrangler, vitest and miniflare need it; machines that ship an
# older Node get Node 22 from the npm registry (the `node` package) in the git-ignored .tools/ folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=12)?0:1)'
}
if ! node_ok; then
  if [ ! -x "$tools/node_modules/node/bin/node" ]; then
    echo "node22: installing Node 22 into .tools/ (this machine has $(node --version 2>/dev/null || echo 'no node'))" >&2
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-save --no-package-lock --no-audit --no-fund --loglevel=error node@22 >&2
  fi
  export PATH="$tools/node_modules/node/bin:$PATH"
  node_ok || { echo "node22: could not provide Node >= 22.12" >&2; exit 1; }
fi
[ "$#" -gt 0 ] || { node --version; exit 0; }
exec "$@"
