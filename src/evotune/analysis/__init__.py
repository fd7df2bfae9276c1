"""Solution-geometry analyses (RESEARCH.md §4), each a library function with a CLI command.

- `kl`: per-token KL(π_A ‖ π_B) on samples from π_A (k1, k2, k3, exact), task × model matrix
- `delta`: ‖Δ‖, ‖Δ‖/‖θ₀‖ and cosine(Δ_i, Δ_j) per layer / module, streamed from safetensors
- `lmc`: reward along (1−λ)θ_A + λθ_B and the barrier
- `robustness`: reward under seeded weight noise σ·ε
- `passk`: pass@k under temperature sampling and under weight-perturbation sampling
(reward-hacking detectors live in `evotune.evaluation.hacking`: every evaluation applies them)

Submodules are imported on use (they pull in torch and transformers).
"""
