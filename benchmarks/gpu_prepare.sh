#!/usr/bin/env bash
# Fetch, where PyPI is reachable, the wheels benchmarks/gpu.sh installs on the GPU machine (which has
# no network) into .whl/ (git-ignored; name it in the run's `carry`). That machine's python 3.12
# already holds everything gpu.sh needs (docs/performance.md); by default this fetches only the
# optional xformers for the xformers rows. Arguments NAME==VERSION replace the default list; pass each
# missing dependency too (--no-deps). The carried tree may not exceed 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ $# -gt 0 ]; then pkgs=("$@"); else pkgs=("xformers==0.0.35"); fi
mkdir -p .whl
"$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${pkgs[@]}"
ls -l .whl
size=$(du -sm .whl | cut -f1)
echo ".whl holds ${size} MiB"
[ "$size" -le 48 ] || { echo "too large to carry with the tree (64 MiB in all)" >&2; exit 1; }
