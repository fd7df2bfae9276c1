#!/usr/bin/env bash
# One command on one CUDA GPU, no network: the `cuda` tests, a 3-iteration tiny-model ES run (full and
# low rank) with replay == checkpoint, and the throughput benchmark on random-weight architectures;
# then one table. Missing packages come from the git-ignored .whl/ (scripts/fetch-gpu-wheels.sh).
#   scripts/gpu-check.sh            # results under $OUT (the device tool's folder) or /tmp/evotune-gpu-check
#   QUICK=1 scripts/gpu-check.sh    # tests + ES runs + the SmolLM2 N=32 benchmark only
#   DEVICE=cpu SKIP_BENCH=1 scripts/gpu-check.sh   # a dry run of the script itself on a CPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RES=${OUT:-/tmp/evotune-gpu-check}
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 TOKENIZERS_PARALLELISM=false
t0=$SECONDS
missing=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("pydantic", "trl", "datasets", "peft") if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu-check: $missing missing and no .whl/ wheels: run scripts/fetch-gpu-wheels.sh where pip works" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/evotune-site .whl/*.whl
  export PYTHONPATH=/tmp/evotune-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PWD/tests:${PYTHONPATH:-}
export EVOTUNE_CACHE=${EVOTUNE_CACHE:-/tmp/evotune-cache}
if [ ! -f "$EVOTUNE_CACHE/smollm2-135m-instruct/tokenizer.json" ] && [ -d .whl/smollm2-tokenizer ]; then
  mkdir -p "$EVOTUNE_CACHE" && cp -r .whl/smollm2-tokenizer "$EVOTUNE_CACHE/"
fi
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" != cpu ]; then
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu-check: torch sees no CUDA GPU")'
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())'
fi

echo "== cuda tests ($((SECONDS - t0)) s)"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$RES/tests.log" || true

echo "== 3-iteration tiny ES runs, replay == checkpoint ($((SECONDS - t0)) s)"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$PY" -m evotune model tiny "$W/tiny" 2>/dev/null
: > "$RES/es_runs.jsonl"
for noise in full lowrank; do
  "$PY" -m evotune train es --model "$W/tiny" --task conciseness --device "$DEVICE" --set es.noise=$noise \
    --population 8 --sigma 0.05 --alpha 0.02 --iterations 3 --set es.prompts_per_iteration=4 \
    --max-new-tokens 16 --eval-every 0 --eval-limit 8 --checkpoint-every 1 --run-dir "$W/$noise" --no-progress 2>/dev/null
  "$PY" -c "import json, sys; from evotune.trainers.replay import replay
print(json.dumps({**replay(sys.argv[1], 3), 'noise': sys.argv[2]}))" "$W/$noise" $noise >> "$RES/es_runs.jsonl" || true
done

bench() {  # name, then throughput.py arguments
  local name=$1; shift
  echo "== benchmark $name ($((SECONDS - t0)) s)"
  "$PY" benchmarks/throughput.py --device cuda --skip noise --prompt-tokens 64 --max-new-tokens 64 -P 8 \
    --json "$RES/bench-$name.json" "$@" || echo "benchmark $name failed" >&2
}
[ -z "${SKIP_BENCH:-}" ] && bench smollm2-n32 --model arch:smollm2-135m -N 32 --batch-sizes 8,256 --compile
if [ -z "${QUICK:-}${SKIP_BENCH:-}" ]; then
  bench smollm2-n128 --model arch:smollm2-135m -N 128 --batch-sizes 1024 --skip noise,naive,full
  bench qwen1.5b-n32 --model arch:qwen2.5-1.5b -N 32 --batch-sizes 8,256 --skip noise,naive
fi

echo "== summary ($((SECONDS - t0)) s)"
"$PY" - "$RES" <<'PY'
import json, pathlib, re, sys
res = pathlib.Path(sys.argv[1])
log = (res / "tests.log").read_text() if (res / "tests.log").is_file() else ""
m = re.findall(r"(\d+) (passed|failed|skipped|error)", log)
print("cuda tests:", ", ".join(f"{n} {k}" for n, k in m) or "no result")
for line in (res / "es_runs.jsonl").read_text().splitlines() if (res / "es_runs.jsonl").is_file() else []:
    r = json.loads(line)
    print(f"tiny ES {r['noise']:<8} 3 iterations: replay == checkpoint: {r['matches_checkpoint']}")
print(f"\n{'benchmark':<14} {'phase':<34} {'compl/s':>9} {'tok/s':>9} {'×limit':>7} {'GPU MB':>8}")
for f in sorted(res.glob("bench-*.json")):
    b = json.loads(f.read_text())
    for p in b["phases"]:
        print(f"{f.stem[6:]:<14} {p['phase']:<34} {p['completions_per_s']:9.1f} {p['tokens_per_s']:9.0f} "
              f"{p['ratio_to_limit']:7.3f} {p.get('peak_gpu_mb', 0):8.0f}")
    for k, v in b["summary"].items():
        print(f"{'':<14} {k:<34} {v if isinstance(v, str) else f'{v:.3f}'}")
print("(arch: models have random weights: throughput only)")
PY
echo "gpu-check done in $((SECONDS - t0)) s"
