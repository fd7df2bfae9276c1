#!/usr/bin/env bash
# The demo: ES on the embedded SmolLM2-135M-Instruct, conciseness task, then a before/after table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN=${RUN:-runs/demo}
CONFIG=${CONFIG:-configs/demo.yaml}
if [ -f "$RUN/config.yaml" ]; then
  $BIN/evotune train es --config "$CONFIG" --run-dir "$RUN" --resume
else
  $BIN/evotune train es --config "$CONFIG" --run-dir "$RUN"
fi
$BIN/evotune runs "$(dirname "$RUN")"
