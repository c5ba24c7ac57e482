#!/usr/bin/env bash
# Builds the operator and trainer images with podman, from the same Dockerfiles users build, on a base made
# here from Debian's packages with mmdebstrap (no container registry is reachable on the test machines):
#
#   podman build -f Dockerfile.<name> --build-arg BASE=localhost/waste-base:<key> --build-arg FETCH_WEIGHTS=0
#
# Everything lives under $WD_IMAGES_CACHE (default ~/.cache/waste-detection/images): podman's storage and
# settings, the base, and one copy of each image. The base is rebuilt only when its recipe below changes;
# an image only when its Dockerfile, its lock file or a file of the build context changes (its tag is a
# hash of those), and podman's layer cache then reuses the unchanged steps (the locked installs).
# WD_IMAGES_REBUILD=1 rebuilds everything.
#
# Prints, last, one line per image: `base=<image>`, `operator=<image>` and `trainer=<image>`. Run podman
# yourself on them with the same settings: export CONTAINERS_CONF=$WD_IMAGES_CACHE/containers.conf
# CONTAINERS_STORAGE_CONF=$WD_IMAGES_CACHE/storage.conf.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${WD_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/waste-detection/images}"
SUITE=bookworm
# Debian's python3 (3.11, as the official python:3.11-slim-bookworm), venv for `python -m venv` (its pip
# wheel stays inside the venv tooling), passwd for useradd; no pip, no compiler.
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,passwd
# The registries' TLS certificates on these machines chain to this bundle, not to a public root: the
# build's pip sees it through a read-only mount; nothing of it is baked into an image.
CA_BUNDLE="${WD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

for tool in podman buildah mmdebstrap runc sha256sum flock; do
  command -v "$tool" >/dev/null || {
    echo "build-images.sh: $tool is missing: scripts/setup.sh installs it (apt-get install podman buildah mmdebstrap runc)" >&2
    exit 1
  }
done

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
# runc, not crun (crun: "cgroups in hybrid mode not supported" here); nofile/nproc above these are refused.
cat > "$CACHE/containers.conf.new" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$CACHE/run/libpod"
EOF
cat > "$CACHE/storage.conf.new" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$CACHE/run/storage"
EOF
mv "$CACHE/containers.conf.new" "$CACHE/containers.conf"
mv "$CACHE/storage.conf.new" "$CACHE/storage.conf"
export CONTAINERS_CONF="$CACHE/containers.conf" CONTAINERS_STORAGE_CONF="$CACHE/storage.conf"

# One build at a time per cache (several checkouts may run the tests at once).
exec 9>"$CACHE/lock"
flock 9

log() { echo "build-images: $*" >&2; }
# Working containers an interrupted build left behind (this cache's builds run one at a time: none is live).
buildah rm --all >/dev/null 2>&1 || true
short() { sha256sum | cut -c1-16; }

# -- the base ----------------------------------------------------------------------------------------------
MMDEBSTRAP_ARGS=(--variant=apt --include="$BASE_PACKAGES"
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' "$SUITE")
IMPORT_CHANGES=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
base_key="$(printf '%s\n' "${MMDEBSTRAP_ARGS[@]}" "${IMPORT_CHANGES[@]}" | short)"
BASE="localhost/waste-base:$base_key"
if [[ "${WD_IMAGES_REBUILD:-0}" == 1 ]] || ! podman image exists "$BASE"; then
  t0=$SECONDS
  log "base $BASE: mmdebstrap $SUITE with $BASE_PACKAGES (about 2 min)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet "${MMDEBSTRAP_ARGS[@]}" "$work/rootfs.tar" >&2
  podman import --quiet "${IMPORT_CHANGES[@]}" "$work/rootfs.tar" "$BASE" >/dev/null
  rm -rf "$work"
  log "base built in $((SECONDS - t0)) s"
fi

# -- the images --------------------------------------------------------------------------------------------
context_hash() {
  # Every file of the build context .dockerignore admits (pyproject.toml, locks/, operator/, trainer/) and
  # .dockerignore itself, by name and content: an image is rebuilt exactly when one of them changes.
  find .dockerignore pyproject.toml locks operator trainer -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
    ! -name '*.pt' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
}

build_image() {
  local name="$1" repo="localhost/waste-$1"
  local key
  key="$({ echo "$BASE"; sha256sum "Dockerfile.$name"; context_hash; } | short)"
  local image="$repo:$key"
  if [[ "${WD_IMAGES_REBUILD:-0}" == 1 ]] || ! podman image exists "$image"; then
    local t0=$SECONDS
    log "$image: podman build -f Dockerfile.$name"
    podman build --quiet --layers --network host \
      --volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
      --build-arg "BASE=$BASE" --build-arg FETCH_WEIGHTS=0 \
      -f "Dockerfile.$name" -t "$image" . >/dev/null
    log "$image built in $((SECONDS - t0)) s"
  fi
  # One copy of each image: older tags go; their layers stay only while the new image shares them.
  local old
  for old in $(podman images --noheading --format '{{.Repository}}:{{.Tag}}' "$repo"); do
    [[ "$old" == "$image" ]] || podman rmi --force "$old" >/dev/null
  done
  echo "$name=$image"
}

t_all=$SECONDS
results=("$(build_image operator)" "$(build_image trainer)")
for old in $(podman images --noheading --format '{{.Repository}}:{{.Tag}}' localhost/waste-base); do
  [[ "$old" == "$BASE" ]] || podman rmi --force "$old" >/dev/null
done
# Untagged leftovers of replaced images; the layer cache of the current ones stays (they are its children).
podman image prune --force >/dev/null
log "done in $((SECONDS - t_all)) s"
echo "base=$BASE"
printf '%s\n' "${results[@]}"
