#!/usr/bin/env bash
# Builds the test control plane's binaries from Go modules into a cache folder outside the repository:
# kube-apiserver, kubectl, kube-controller-manager (upstream, with the Job controller's test timings settable
# from the environment: kcm/main.go), kube-scheduler and etcd. The folder is keyed by the versions and by
# a hash of kcm/main.go; nothing is built when all binaries are there, or when KUBEBUILDER_ASSETS points
# at a folder that holds them (envtest's convention).
#
# Prints the folder that holds the binaries on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

K8S_VERSION="${WD_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${WD_ETCD_VERSION:-v3.5.21}"
CACHE_ROOT="${WD_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/waste-detection/controlplane}"
BINARIES=(kube-apiserver kubectl kube-controller-manager kube-scheduler etcd)

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in "${BINARIES[@]}"; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

kcm_hash="$(sha256sum "$here/kcm/main.go" | cut -c1-8)"
out="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kcm-$kcm_hash"
all_there() { for b in "${BINARIES[@]}"; do [[ -x "$out/$b" ]] || return 1; done; }
if all_there; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-buildvcs=false -trimpath" CGO_ENABLED=0
t0=$SECONDS

# k8s.io/kubernetes lists its staging modules at v0.0.0 with local replaces; map each to the published
# module of the matching minor version (v1.X.Y <-> v0.X.Y).
staging_version="v0.${K8S_VERSION#v1.}"
mkdir -p "$work/k8s/kcm" && cd "$work/k8s"
cp "$here/kcm/main.go" kcm/main.go
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
{
  echo "module wd.local/controlplane"
  echo "go $(sed -n 's/^go //p' "$gomod")"
  echo "require k8s.io/kubernetes $K8S_VERSION"
  sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
} > go.mod
echo "building kube-apiserver, kubectl, kube-controller-manager, kube-scheduler $K8S_VERSION (first build: 15-25 min on 2 cores)" >&2
go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
go build -ldflags="$ldflags" -o "$work/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kube-scheduler >&2
go build -ldflags="$ldflags" -o "$work/bin/kube-controller-manager" ./kcm >&2

mkdir -p "$work/etcd" && cd "$work/etcd"
printf 'module wd.local/etcd\ngo 1.23\n' > go.mod
echo "building etcd $ETCD_VERSION" >&2
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
go build -ldflags="-s -w" -o "$work/bin/etcd" go.etcd.io/etcd/server/v3 >&2

# Move into place last, so an interrupted build never leaves a half-filled cache that looks complete.
for b in "${BINARIES[@]}"; do mv "$work/bin/$b" "$out/$b.tmp" && mv "$out/$b.tmp" "$out/$b"; done
echo "built in $((SECONDS - t0)) s" >&2
echo "$out"
