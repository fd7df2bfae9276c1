"""Hugging Face transformers backend: batched generation and the one shared decode path.

Compiled generation (`compile_backend`): a static KV cache, so `generate` runs a torch.compile'd
forward for the decode steps (CUDA graphs with inductor on a GPU). Prompts are left-padded to a
multiple of `COMPILE_PAD` tokens so that a handful of shapes are compiled once, not one per batch.
Module hooks (batched low-rank ES) are *guarded*: by default dynamo skips hook guards, so hooks
added after a compile would be silently ignored and every "perturbed" member would be the
unperturbed model (docs/gpu.md). Compiled and eager tokens can differ; each is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from evotune.errors import ModelError
from evotune.hashing import stable_int

COMPILE_PAD = 32  # prompt lengths are bucketed to this multiple under compiled generation


@dataclass(frozen=True)
class Completion:
    """A decoded completion. `text` is what rewards see; `raw` keeps special tokens for detectors."""

    text: str
    raw: str
    n_tokens: int
    truncated: bool
    token_ids: tuple[int, ...] = ()  # the generated ids up to and including the stop token


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a completion (generation config's eos list plus the tokenizer's eos)."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def decode_completion(tokenizer: Any, ids: Sequence[int], stops: set[int], max_new_tokens: int) -> Completion:
    """The single way generated token ids become reward text, used by ES, GRPO, eval and analyses.

    Cuts at the first stop token (padding after it is ignored), drops special tokens and
    surrounding whitespace. A completion with no stop token at the length limit is `truncated`.
    """
    ids = [int(i) for i in ids]
    cut = next((k for k, t in enumerate(ids) if t in stops), None)
    body = ids if cut is None else ids[:cut]
    n_tokens = len(body) + (0 if cut is None else 1)
    text = tokenizer.decode(body, skip_special_tokens=True).strip()
    raw = tokenizer.decode(body, skip_special_tokens=False)
    return Completion(
        text=text, raw=raw, n_tokens=n_tokens, truncated=cut is None and len(ids) >= max_new_tokens,
        token_ids=tuple(ids[:n_tokens]),
    )


def compile_config(backend: str, device: torch.device) -> Any:
    """transformers' CompileConfig: CUDA graphs ("reduce-overhead") with inductor on a GPU; any device."""
    from transformers import CompileConfig

    mode = ("reduce-overhead" if device.type == "cuda" else "default") if backend == "inductor" else None
    cc = CompileConfig(backend=backend, mode=mode, fullgraph=False, dynamic=False)
    cc._compile_all_devices = True  # transformers compiles on CUDA only unless told (CI tests it on CPU)
    return cc


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
    temperature: float = 0.0,
    seed: int | None = None,
    compile_backend: str | None = None,
    min_new_tokens: int | None = None,
    min_prompt_tokens: int | None = None,
) -> list[Completion]:
    """Generate one completion per prompt, in order. Greedy when temperature == 0.

    Prompts are batched in their given order (not re-sorted) so that a batch's composition, and
    thus every padded forward pass, is a pure function of the inputs: same inputs, same outputs.
    Sampling is plain temperature sampling (no top-k/top-p), seeded per call. `compile_backend`
    (e.g. "inductor") compiles the decode forward over a static cache; `min_new_tokens` forces
    fixed-length completions (benchmarks with random weights). `min_prompt_tokens` left-pads every
    batch to at least that many prompt tokens, so a compiled caller keeps one static shape.
    """
    _check_request(max_new_tokens, batch_size, temperature)
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stops))
    device = next(model.parameters()).device
    gen_cfg = _generation_config(max_new_tokens, temperature, stops, pad, min_new_tokens, compile_backend, device)
    pad_to = None if compile_backend is None else COMPILE_PAD
    out: list[Completion] = []
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens must start at one column
    try:
        for start in range(0, len(prompts), batch_size):
            enc = _encode(tokenizer, prompts[start : start + batch_size], device, pad, pad_to, min_prompt_tokens)
            if isinstance(context, int) and enc["input_ids"].shape[1] + max_new_tokens > context:
                longest = int(enc["attention_mask"].sum(1).max())
                raise ModelError(
                    f"a prompt of {longest} tokens plus max_new_tokens {max_new_tokens} exceeds the model's context "
                    f"of {context} tokens; shorten the prompts or lower --max-new-tokens"
                )
            if temperature > 0:  # each batch's sampling stream is a pure function of (seed, batch start)
                torch.manual_seed(stable_int("sample", 0 if seed is None else seed, start))
            if compile_backend is None:
                seqs = model.generate(**enc, generation_config=gen_cfg)
            else:
                with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
                    seqs = model.generate(**enc, generation_config=gen_cfg)
            new = seqs[:, enc["input_ids"].shape[1] :].tolist()
            out.extend(decode_completion(tokenizer, ids, stops, max_new_tokens) for ids in new)
    finally:
        tokenizer.padding_side = old_side
    return out


def _check_request(max_new_tokens: int, batch_size: int, temperature: float) -> None:
    """Refuse what `model.generate` would misread or fail on deep inside transformers."""
    if max_new_tokens < 1:
        raise ModelError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ModelError(f"batch size must be >= 1, got {batch_size}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ModelError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")


def _generation_config(max_new_tokens: int, temperature: float, stops: set[int], pad: int,
                       min_new_tokens: int | None, compile_backend: str | None, device: torch.device) -> Any:
    """Greedy, or plain temperature sampling (top-k and top-p off); a static cache when compiled."""
    from transformers import GenerationConfig

    sample = temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,
        eos_token_id=sorted(stops),
        pad_token_id=pad,
        min_new_tokens=min_new_tokens,
    )
    if compile_backend is not None:
        gen_cfg.cache_implementation = "static"
        gen_cfg.compile_config = compile_config(compile_backend, device)
    return gen_cfg


def _encode(tokenizer: Any, chunk: Sequence[str], device: torch.device, pad: int, pad_to: int | None,
            min_prompt_tokens: int | None) -> Any:
    """One left-padded batch of prompts on `device`, at least `min_prompt_tokens` wide."""
    enc = tokenizer(
        list(chunk), return_tensors="pt", padding=True, add_special_tokens=False, pad_to_multiple_of=pad_to
    ).to(device)
    short = (min_prompt_tokens or 0) - enc["input_ids"].shape[1]
    if short > 0:  # left padding: positions come from the attention mask, so the prompt is unchanged
        enc["input_ids"] = torch.nn.functional.pad(enc["input_ids"], (short, 0), value=pad)
        enc["attention_mask"] = torch.nn.functional.pad(enc["attention_mask"], (short, 0), value=0)
    return enc
