"""How much the fitness shaping changes the ES step at the same α (issue 29, item 3).

    python benchmarks/shaping_step.py --out benchmarks/results/shaping_step.json

For each population size N, draws R random fitness vectors (continuous, no ties) and, for each of
evotune's shapings, (1) Σ cᵢ² of the coefficients `tell` returns and (2) the norm of the step
`EvolvingParams.apply_update` takes with the paper's update (sgd, lr α/N) on one tensor of D weights,
drawn with the real noise. ‖Δθ‖ ≈ (α/N)·√(Σc²·D) because the ε's are near-orthogonal, so the ratio
z-score / centered rank is √(N / Σc²_rank) = √(12(N−1)/(N+1)) → √12 ≈ 3.46 for large N. Prints a table
and writes the numbers as JSON. Deterministic (seeded); takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
import torch

from evotune.config import ESConfig
from evotune.es.params import EvolvingParams
from evotune.es.strategy import SHAPERS, ask, tell


def measure(n: int, repeats: int, d: int, alpha: float, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed + n)
    sumsq: dict[str, list[float]] = {s: [] for s in SHAPERS}
    norms: dict[str, list[float]] = {s: [] for s in SHAPERS}
    for r in range(repeats):
        fit = rng.normal(size=n).tolist()
        members = ask(seed, r + 1, n)
        for shaping in SHAPERS:
            coeffs = tell(members, fit, shaping)
            assert coeffs is not None
            sumsq[shaping].append(math.fsum(c * c for c in coeffs.values()))
            w = torch.nn.Parameter(torch.zeros(d), requires_grad=False)
            params = EvolvingParams([("w", w)], es=ESConfig(population=n, alpha=alpha))
            params.apply_update(coeffs, alpha)
            norms[shaping].append(params.last_step_norm)
    z, c = statistics.fmean(norms["zscore"]), statistics.fmean(norms["centered_rank"])
    return {
        "N": n,
        "sum_c2": {s: statistics.fmean(v) for s, v in sumsq.items()},
        "step_norm": {s: statistics.fmean(v) for s, v in norms.items()},
        "step_rms": {s: statistics.fmean(v) / math.sqrt(d) for s, v in norms.items()},
        "alpha_over_sqrt_N": alpha / math.sqrt(n),
        "ratio_measured": z / c,
        "ratio_formula": math.sqrt(12 * (n - 1) / (n + 1)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--populations", type=int, nargs="+", default=[4, 8, 16, 30, 64, 128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dim", type=int, default=100_000, help="weights in the test tensor (D)")
    ap.add_argument("--alpha", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rows = [measure(n, a.repeats, a.dim, a.alpha, a.seed) for n in a.populations]
    print(f"α = {a.alpha}, D = {a.dim}, {a.repeats} fitness draws per N; step RMS = ‖Δθ‖/√D")
    print(f"{'N':>5} {'Σz²':>8} {'Σrank²':>8} {'RMS z-score':>12} {'RMS rank':>10} {'α/√N':>10} {'ratio':>7} {'√(12(N−1)/(N+1))':>17}")
    for r in rows:
        s, rms = r["sum_c2"], r["step_rms"]
        print(f"{r['N']:>5} {s['zscore']:>8.3f} {s['centered_rank']:>8.3f} {rms['zscore']:>12.4e} "  # type: ignore[index]
              f"{rms['centered_rank']:>10.4e} {r['alpha_over_sqrt_N']:>10.4e} {r['ratio_measured']:>7.4f} "  # type: ignore[index]
              f"{r['ratio_formula']:>17.4f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"args": {k: v for k, v in vars(a).items() if k != "out"}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
