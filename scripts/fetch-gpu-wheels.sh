#!/usr/bin/env bash
# Fill the git-ignored .whl/ folder that scripts/gpu-check.sh installs from on a GPU machine with no
# network. Only what that image lacks (/work/.library/device/KINDS.md, RESEARCH.md §7: Python 3.12,
# torch 2.11, transformers 5.17, accelerate, peft, safetensors, pyarrow, pandas, xxhash, fsspec, ... but
# no pydantic, trl, datasets, dill, multiprocess, ray or gguf): pydantic and its three companions for
# evotune itself; trl and datasets (+ dill, multiprocess) for the GRPO check. The image's own peft is
# used (a carried one would shadow it). gpu-check installs a wheel only if its module is missing there.
# Run where pip reaches PyPI and evotune's embedded model cache exists (~8 MB in all; Ray, ~70 MB,
# stays out: evotune imports without it and the Ray tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# the SmolLM2 tokenizer alone (arch: models and the tiny test model use it; the GGUF is too large)
mkdir -p .whl/smollm2-tokenizer
tok=$(PYTHONPATH=src "$PY" -c 'from evotune.backends.models import tokenizer_dir; print(tokenizer_dir())')
cp "$tok"/tokenizer.json "$tok"/tokenizer_config.json .whl/smollm2-tokenizer/
[ -f "$tok"/chat_template.jinja ] && cp "$tok"/chat_template.jinja .whl/smollm2-tokenizer/
du -sh .whl
