#!/usr/bin/env bash
# The whole GPU check, one command of at most 8 minutes on one CUDA GPU with no network:
# install what the image lacks (from the git-ignored .whl/, see scripts/fetch-gpu-wheels.sh), then
# benchmarks/gpu_quick.py: exactness, eager throughput (4 arch: models), the `cuda` tests, compiled SmolLM2.
#   scripts/gpu-check.sh                       # results under $OUT (the device tool's folder) or /tmp/evotune-gpu-check
#   ONLY=compiled scripts/gpu-check.sh         # rerun one step (exact | eager | cuda | compiled, comma-separated)
#   DRY=1 scripts/gpu-check.sh                 # the same script on a CPU machine: every step tiny (gpu_quick --dry-run)
# Every step logs to $RES/<step>.log; a failing step is one line on stderr and the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RES=${OUT:-/tmp/evotune-gpu-check}
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 TOKENIZERS_PARALLELISM=false
t0=$SECONDS
failed=0
step() {  # name, then the command; its output goes to $RES/name.log
  local name=$1; shift
  echo "== $name ($((SECONDS - t0)) s)"
  "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    failed=$((failed + 1))
    echo "gpu-check: $name failed (exit $rc): $(grep -v '^\s*$' "$RES/$name.log" | tail -n 1 | cut -c1-200) [log: $RES/$name.log]" >&2
  fi
  return 0
}

# only what the image lacks: a wheel the image already has (peft, numpy, ...) would shadow it
install_missing() {
  local wheels=() mod glob
  rm -rf /tmp/evotune-site  # a warm machine may hold an earlier run's wheels (e.g. a peft that shadowed the image's)
  for pair in pydantic:pydantic-2 pydantic_core:pydantic_core- annotated_types:annotated_types- \
              typing_inspection:typing_inspection- trl:trl- datasets:datasets- dill:dill- multiprocess:multiprocess-; do
    mod=${pair%%:*}; glob=${pair#*:}
    "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$mod') is not None)" || continue
    ls .whl/${glob}*.whl >/dev/null 2>&1 || { echo "$mod missing and no .whl/${glob}*.whl: run scripts/fetch-gpu-wheels.sh where pip works"; return 2; }
    wheels+=(.whl/${glob}*.whl)
  done
  [ ${#wheels[@]} -eq 0 ] && { echo "nothing missing"; return 0; }
  echo "installing ${wheels[*]}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/evotune-site "${wheels[@]}"
}
step install install_missing
[ -d /tmp/evotune-site ] && export PYTHONPATH=/tmp/evotune-site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD/src:$PWD/tests:${PYTHONPATH:-}
export EVOTUNE_CACHE=${EVOTUNE_CACHE:-/tmp/evotune-cache}
if [ ! -f "$EVOTUNE_CACHE/smollm2-tokenizer/tokenizer.json" ] && [ -d .whl/smollm2-tokenizer ]; then
  mkdir -p "$EVOTUNE_CACHE" && cp -r .whl/smollm2-tokenizer "$EVOTUNE_CACHE/"
fi

if [ -z "${DRY:-}" ]; then
  step device "$PY" -c 'import torch, transformers, sys
if not torch.cuda.is_available(): sys.exit("torch sees no CUDA GPU")
p = torch.cuda.get_device_properties(0)
print("torch", torch.__version__, "transformers", transformers.__version__, p.name, p.multi_processor_count, "SMs")'
  cat "$RES/device.log"
fi

# gpu_quick's steps keep their own timeouts (400 s, at most 430 s with the kill grace) and write every measurement as it lands;
# the outer timeout is a safety net under the 10-minute command limit
step gpu_quick timeout -k 5 450 "$PY" benchmarks/gpu_quick.py --out "$RES/gpu_quick.jsonl" \
  ${ONLY:+--only "$ONLY"} ${DRY:+--dry-run}

echo "== summary ($((SECONDS - t0)) s)"
"$PY" - "$RES/gpu_quick.jsonl" <<'PY' || echo "gpu-check: no summary (see $RES/gpu_quick.log)" >&2
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
for r in rows:
    what = r.get("check") or r.get("phase") or ""
    if r["step"] in ("start", "summary") or what == "done" and r["status"] == "ok":
        continue
    keys = ("ok", "compl_per_s", "s", "peak_gpu_mb", "graphs_added_by_second_population", "members_moved",
            "elements_differing", "max_abs_diff_by_group", "passed", "failed", "error")
    val = ", ".join(f"{k}={round(r[k], 3) if isinstance(r[k], float) else r[k]}" for k in keys if r.get(k) is not None)
    print(f"{r['step']:<9} {r.get('model', ''):<20} {what:<26} {r['status']:<7} {val}")
for r in rows:
    if r["step"] == "summary":
        for k, v in r.items():
            if k not in ("step", "status"):
                print(f"  {k}: {round(v, 3) if isinstance(v, float) else v}")
print("(arch: models have random weights: throughput only)")
PY
echo "gpu-check done in $((SECONDS - t0)) s; $failed step(s) failed; results in $RES"
