#!/usr/bin/env bash
# Installs what the project needs on a Debian machine: PostgreSQL (tests), Go (control-plane build, tests),
# podman, buildah, mmdebstrap and runc (scripts/build-images.sh builds and the tests run the images), and
# the Python package with its training, operator and development extras. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null || need_apt+=(postgresql-client)
for tool in podman buildah mmdebstrap runc; do
  command -v "$tool" >/dev/null || need_apt+=("$tool")
done
if [[ "${WD_SKIP_APT:-0}" != 1 && ${#need_apt[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need_apt[*]} (run: sudo apt-get install ${need_apt[*]})" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e ".[train,operator,dev]"
