#!/usr/bin/env bash
# The measurement of docs/safety.md: scorer service, matched-budget ES and GRPO, judge tournament.
# Single-threaded CPU; about 25 minutes on a shared 2-core machine. OUT defaults to runs/safety.
set -euo pipefail
OUT=${OUT:-runs/safety}
PORT=${PORT:-8765}
export OMP_NUM_THREADS=1
evotune serve scorer --reward judge:smollm2-135m --cost judge:smollm2-135m --port "$PORT" --threads 1 \
    --batch-size 16 > "$OUT.scorer.log" 2>&1 &
SCORER=$!
trap 'kill $SCORER' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do sleep 1; done
/usr/bin/time -f "es wall %e s" evotune train es --config configs/safety-smollm2.yaml --run-dir "$OUT/es" --no-progress
/usr/bin/time -f "grpo wall %e s" evotune train grpo --config configs/safety-smollm2.yaml --run-dir "$OUT/grpo" --no-progress
/usr/bin/time -f "judge wall %e s" evotune judge --models "smollm2-135m,$OUT/es,$OUT/grpo" --labels base,es,grpo \
    --judge smollm2-135m --n 24 --max-new-tokens 40 --out "$OUT/judge" --samples 6
