#!/usr/bin/env bash
# The benchmarks and two figures on whatever accelerator JAX finds, in one process each.
#   bash benchmarks/gpu_suite.sh [OUT_DIR]
# Uses the python3 on PATH (an environment with jax, flax, optax, chex, orbax-checkpoint,
# matplotlib); the package is imported from this checkout, so nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_suite}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
for b in ntp_step sampler_throughput rl_throughput; do
  echo "== benchmarks/$b.py"; python3 "benchmarks/$b.py"
done
for fig in entropy-mechanism long-cot-emergence; do
  echo "== toyreason run $fig"
  time python3 -m toymodels.cli run "$fig" --out "$out/runs"
done
