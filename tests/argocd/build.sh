#!/usr/bin/env bash
# Builds luahealth (ArgoCD's Lua engine running our health check: luahealth/main.go) from the Go module
# proxy into a cache folder keyed by the hash of its sources; nothing is built when it is there.
# Prints the binary's path on its last line.
set -euo pipefail
src="$(cd "$(dirname "$0")/luahealth" && pwd)"
CACHE_ROOT="${WD_LUAHEALTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/waste-detection/luahealth}"
hash="$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-8)"
out="$CACHE_ROOT/$hash/luahealth"
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build luahealth" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cd "$src"
t0=$SECONDS
CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -mod=readonly" go build -ldflags="-s -w" -o "$out.tmp" . >&2
mv "$out.tmp" "$out"
echo "built luahealth in $((SECONDS - t0)) s" >&2
echo "$out"
