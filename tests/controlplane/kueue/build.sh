#!/usr/bin/env bash
# Builds Kueue's manager (sigs.k8s.io/kueue/cmd/kueue) from the Go module proxy at a pinned release into a
# cache folder beside the control plane's binaries, and copies its CRDs out of the same module
# (config/components/crd/bases). Nothing is built when the folder already holds the binary and the CRDs.
# v0.15.2 is the newest release on Kubernetes 0.34 libraries (the test control plane is 1.34).
#
# Prints the folder that holds `kueue` and `crds/` on its last line.
set -euo pipefail

KUEUE_VERSION="${WD_KUEUE_VERSION:-v0.15.2}"
CACHE_ROOT="${WD_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/waste-detection/controlplane}"
out="$CACHE_ROOT/kueue-$KUEUE_VERSION"

all_there() { [[ -x "$out/kueue" && -f "$out/crds/.complete" ]]; }
if all_there; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build Kueue's manager" >&2; exit 1; }
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
t0=$SECONDS

# Build inside the downloaded module itself, so its own go.mod, go.sum and replace lines decide every
# dependency version (a consuming module would ignore its replace lines).
echo "building Kueue $KUEUE_VERSION (first build: about 4 min on 2 cores)" >&2
moddir="$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
[[ -d "$moddir" ]] || { echo "go mod download sigs.k8s.io/kueue@$KUEUE_VERSION gave no module folder" >&2; exit 1; }
(cd "$moddir" && go build -ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
  -o "$work/kueue" ./cmd/kueue) >&2

mkdir -p "$work/crds"
cp "$moddir"/config/components/crd/bases/*.yaml "$work/crds/"
chmod u+w "$work"/crds/*.yaml
touch "$work/crds/.complete"

# Move into place last, so an interrupted build never leaves a half-filled cache that looks complete.
rm -rf "$out/crds"
mv "$work/crds" "$out/crds"
mv "$work/kueue" "$out/kueue.tmp" && mv "$out/kueue.tmp" "$out/kueue"
echo "built in $((SECONDS - t0)) s" >&2
echo "$out"
