"""What measuring train/step_norm costs per ES update: a clone, a subtraction and a norm per tensor.

    python benchmarks/step_norm_cost.py > benchmarks/results/step_norm_cost.json

SmolLM2-135M-sized fp32 tensors (~148 M floats), 2 threads, 5 alternating repeats; prints JSON.
"""

import json
import time

import torch

torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
shapes = [(49152, 576)] + [(576, 576)] * 120 + [(1536, 576)] * 90  # ~ SmolLM2-135M sized (≈134 M floats)
ts = [torch.randn(*s, generator=g) for s in shapes]
acc = [torch.randn(*s, generator=g) for s in shapes]
n = sum(t.numel() for t in ts)
def run(measure: bool) -> float:
    t0 = time.perf_counter()
    for m, a in zip(ts, acc, strict=True):
        before = m.clone() if measure else None
        m.add_(a, alpha=1e-3)
        if measure:
            float(torch.linalg.vector_norm(before.sub_(m), dtype=torch.float64))
    return time.perf_counter() - t0
res = {"floats": n, "plain_s": [], "measured_s": []}
for _ in range(5):
    res["plain_s"].append(run(False))
    res["measured_s"].append(run(True))
res["median_plain_s"] = sorted(res["plain_s"])[2]
res["median_measured_s"] = sorted(res["measured_s"])[2]
print(json.dumps(res))
