#!/usr/bin/env bash
# The GPU proof in one command (docs/performance.md), made for a lent GPU machine whose
# python3 already holds torch and accelerate and which has no network:
#   bash benchmarks/gpu.sh              # all of it in <= GPU_TOTAL_S seconds (default 450)
#   bash benchmarks/gpu.sh --dry-run    # the same steps at toy size on a CPU machine
# Installs the wheels carried in .whl/ (benchmarks/gpu_prepare.sh) into /tmp/site, runs
# benchmarks/gpu.py under a time budget with PYTHONPATH=src, then the pytest tests marked `gpu`,
# and prints the results table. gpu.json, gpu.md and both logs go to GPU_RESULTS_DIR
# (default benchmarks/results). Extra arguments go to gpu.py.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
total=${GPU_TOTAL_S:-450}
pytest_s=${GPU_PYTEST_S:-60}
results=${GPU_RESULTS_DIR:-benchmarks/results}
py=${PYTHON:-python3}
mkdir -p "$results"

if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

# Preflight: name anything missing before spending the budget.
"$py" - <<'PY' || exit 1
import importlib.util, sys
need = ["torch", "accelerate", "einops", "safetensors", "numpy", "pandas", "pyarrow", "tqdm", "PIL",
        "pytest"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA device: "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}, xformers: "
      f"{'yes' if importlib.util.find_spec('xformers') else 'no'}")
if missing:
    sys.exit(f"missing python packages: {missing} (carry them as wheels: benchmarks/gpu_prepare.sh)")
PY

# The budget starts after gpu.py's imports (allow 40 s); SIGTERM makes it write what it has and stop.
bench_s=$((total - pytest_s - (SECONDS - start) - 40))
timeout -k 15 $((bench_s + 40)) "$py" benchmarks/gpu.py --budget-s "$bench_s" \
  --results-dir "$results" "$@" 2>&1 | tee "$results/gpu_run.log"
bench_rc=${PIPESTATUS[0]}

left=$((total - (SECONDS - start) - 5))
mapfile -t files < <(grep -rlE "pytest\.mark\.gpu" tests --include='test_*.py' | sort)
timeout -k 5 $((left > 15 ? left : 15)) "$py" -m pytest -m gpu -q -p no:cacheprovider "${files[@]}" \
  2>&1 | tee "$results/gpu_pytest.log"
test_rc=${PIPESTATUS[0]}

echo
cat "$results/gpu.md"
echo "gpu.py exit $bench_rc, pytest -m gpu exit $test_rc, $((SECONDS - start)) s in all"
exit $((bench_rc != 0 || test_rc != 0))
