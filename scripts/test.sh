#!/usr/bin/env bash
# The whole test suite, on real parts: installs what it needs, builds (or reuses) the control plane's
# binaries, lints, then runs pytest. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "control plane binaries: $(bash tests/controlplane/build.sh | tail -n 1)"
echo "Kueue manager and CRDs: $(bash tests/controlplane/kueue/build.sh | tail -n 1)"
echo "ArgoCD Lua engine (luahealth): $(bash tests/argocd/build.sh | tail -n 1)"
ruff check .
ruff format --check . >/dev/null || { ruff format --diff . | head -50; exit 1; }
python3 -m pytest -q -ra "$@"
