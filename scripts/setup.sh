#!/usr/bin/env bash
# Create .venv and install the project with its dev tools. Idempotent: a second call with an unchanged
# pyproject.toml returns at once. Offline-safe once installed; installs come only from package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned to the release this project is tested with (CPU-only machines use it on the CPU).
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[dev]"
rm -f .venv/.installed-*
touch "$stamp"
echo "uvit_pipeline installed in .venv"
