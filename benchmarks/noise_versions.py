"""Noise version 1 vs 2 on the CPU: what keying the generator by the full 63-bit seed costs.

    OMP_NUM_THREADS=1 python benchmarks/noise_versions.py --out benchmarks/results/noise_versions.json

Version 2 sets torch's mt19937 state from the key (`noise._keyed_state`) instead of `manual_seed`; the
draw itself is the same `torch.randn`. Measured, one torch thread, versions alternating so that load
changes hit both alike: (a) the generator set-up per tensor (µs, many small draws), (b) one full draw
of every SmolLM2-135M tensor (272 tensors, 134.5 M normals) into existing buffers, as a full-rank
member's perturbation does. Medians and all repeats go to the JSON, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from evotune.noise import _generator, noise

ARCH = Path(__file__).resolve().parents[1] / "src/evotune/data/archs/smollm2-135m.json"


def smollm2_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Every evolving tensor of SmolLM2-135M (tied head once), from its architecture file."""
    c = json.loads(ARCH.read_text())
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * c.get("head_dim", h // c["num_attention_heads"])
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h)), ("model.norm.weight", (h,))]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)), (p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,))]
    return out


def setup_us(version: int, calls: int) -> float:
    t0 = time.perf_counter()
    for k in range(calls):
        _generator(0x5EED_0000_0000 + k, "cpu", version)
    return (time.perf_counter() - t0) / calls * 1e6


def full_draw_s(version: int, buffers: list[tuple[str, torch.Tensor]], seed: int) -> float:
    t0 = time.perf_counter()
    for name, buf in buffers:
        noise(seed, name, tuple(buf.shape), out=buf, version=version)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=5000, help="generator set-ups per repeat for (a)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    shapes = smollm2_shapes()
    buffers = [(n, torch.empty(s)) for n, s in shapes]
    numel = sum(b.numel() for _, b in buffers)
    load0 = os.getloadavg()
    setup: dict[int, list[float]] = {1: [], 2: []}
    draw: dict[int, list[float]] = {1: [], 2: []}
    full_draw_s(1, buffers, 0)  # touch the buffers once
    for r in range(a.repeats):
        for v in ((1, 2) if r % 2 == 0 else (2, 1)):
            setup[v].append(setup_us(v, a.calls))
            draw[v].append(full_draw_s(v, buffers, 1000 + r))
    res = {
        "torch": torch.__version__, "machine": platform.machine(), "threads": 1,
        "tensors": len(shapes), "numel": numel, "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "setup_us": {v: {"median": statistics.median(x), "all": x} for v, x in setup.items()},
        "full_draw_s": {v: {"median": statistics.median(x), "all": x} for v, x in draw.items()},
    }
    s1, s2 = res["setup_us"][1]["median"], res["setup_us"][2]["median"]
    d1, d2 = res["full_draw_s"][1]["median"], res["full_draw_s"][2]["median"]
    print(f"{len(shapes)} tensors, {numel / 1e6:.1f} M normals, 1 thread, load {load0[0]:.1f} → {res['loadavg_after'][0]:.1f}")
    print(f"generator set-up per tensor: v1 {s1:.1f} µs, v2 {s2:.1f} µs (+{s2 - s1:.1f} µs; ×{len(shapes)} = "
          f"{(s2 - s1) * len(shapes) / 1e3:.2f} ms per member)")
    print(f"full SmolLM2 draw: v1 {d1:.3f} s, v2 {d2:.3f} s (ratio v2/v1 {d2 / d1:.3f}); "
          f"repeats v1 {[round(x, 3) for x in draw[1]]}, v2 {[round(x, 3) for x in draw[2]]}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
