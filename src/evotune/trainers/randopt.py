"""RandOpt: sample N perturbations of the base, score them on the same train prompts, keep the top K.

No update at all (Gan & Isola, arXiv 2603.12228): the baseline that shows how much of ES's gain
selection alone already gives. It reuses ES's parts (`ask`, the evaluators, `EvolvingParams`) and
its run directory: step k scores members (k−1)·B … k·B−1 of one population (B =
`randopt.members_per_step`) and commits their seeds and fitness to trajectory.jsonl, so budgets,
metrics, resume and `compare` work as for ES.

The run's weights (its checkpoint, `eval/*`, what `compare` and the analyses read) are the best
member θ₀ + σ·ε(best): an ensemble of K models is not one weights file. The majority vote of the K
(`es.randopt.answer_key` of each held-out completion) is scored on the held-out split beside it and logged
as `vote/*` (metrics, summary.json, `evals/vote_iter_K.jsonl`).
"""

from __future__ import annotations

import math
from typing import Any

from evotune.config import TrainConfig
from evotune.errors import RunStateError
from evotune.es.params import EvolvingParams
from evotune.es.randopt import majority_vote, top_k
from evotune.es.strategy import Member, ask
from evotune.es.trajectory import check_device, read_trajectory, trajectory_row
from evotune.evaluation import evaluate, summarize
from evotune.runs.metrics import STEP, Budget, StepStats
from evotune.runs.rundir import keep_rows, read_jsonl, write_jsonl
from evotune.trainers.es import ESTrainer

NEVER = 10**9  # RandOpt evaluates and checkpoints only the base (step 0) and the selection (the end)


def scored_members(rows: list[dict[str, Any]], cfg: TrainConfig) -> tuple[list[Member], list[float]]:
    """Every member the rows scored, with its fitness, checked against the population `ask` derives."""
    pop = ask(cfg.seed, 1, cfg.es.population, cfg.es.antithetic)
    members, fitness = [], []
    for row in rows:
        for s, g, f in zip(row["seeds"], row["signs"], row["fitness"], strict=True):
            m = pop[len(members)] if len(members) < len(pop) else None
            if m is None or (m.seed, m.sign) != (s, g):
                raise RunStateError(f"trajectory row {row['step']} has members that this config does not produce")
            members.append(m)
            fitness.append(float(f))
    return members, fitness


def select(params: EvolvingParams, rows: list[dict[str, Any]], cfg: TrainConfig) -> list[Member]:
    """Set the weights to the best scored member and return the top K, best first (resume and replay alike)."""
    check_device(rows, params.device_type, cfg.es.allow_device_change)
    members, fitness = scored_members(rows, cfg)
    chosen = [members[i] for i in top_k(fitness, min(cfg.randopt.top_k, len(members)))]
    best = chosen[0]
    params.perturb(best.seed, best.sign, cfg.es.sigma)
    params.load_master({n: p.detach() for n, p in params.params.items()})  # the weights the member was scored with
    return chosen


class RandOptTrainer(ESTrainer):
    """N perturbations scored, the best kept as the run's weights, the top K's majority vote evaluated."""

    method = "randopt"
    steps_name = "steps"  # its steps are slices of one population, not ES iterations
    unit = "step"

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True, **kw: Any) -> None:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"every": 0}), "checkpoint_every": NEVER})
        super().__init__(cfg, resume, progress, **kw)
        self.chosen: list[Member] | None = None
        self.vote: dict[str, float] = {}

    @property
    def total_steps(self) -> int:
        return math.ceil(self.cfg.es.population / self.cfg.randopt.members_per_step)

    def step(self, k: int) -> StepStats:
        es, seed, b = self.cfg.es, self.cfg.seed, self.cfg.randopt.members_per_step
        members = ask(seed, 1, es.population, es.antithetic, es.sigma)[(k - 1) * b : k * b]  # one population
        batch = self.task.batch("train", es.prompts_per_iteration, seed, 1)  # every member: the same prompts
        res = self.evaluator(members, batch, [self.task.render(e, self.tok) for e in batch])
        self.row = trajectory_row(k, members, res, self.params)  # no update: no placement, no rewards
        return res

    def rewind(self) -> int:
        """The scored slices on file; the weights stay the base's until the selection at the end."""
        rows = self.rows = read_trajectory(self.run.trajectory)
        scored_members(rows, self.cfg)  # a damaged or foreign trajectory stops here
        keep_rows(self.run.metrics, lambda r: r.get(STEP, 0) <= len(rows))
        self.budget = Budget(**rows[-1]["budget"]) if rows else Budget()
        return len(rows)

    def finish_step(self, k: int, resumed: bool = False) -> None:
        """At the end: the top K's vote (from the base weights), then the best member's eval and checkpoint."""
        if k > 0 and self.chosen is None and (k >= self.total_steps or self.stop_reason is not None):
            rows = read_trajectory(self.run.trajectory)
            members, fitness = scored_members(rows, self.cfg)
            order = top_k(fitness, min(self.cfg.randopt.top_k, len(fitness)))
            if len(order) > 1:
                self.vote_eval(k, [members[i] for i in order], resumed)
            self.chosen = select(self.params, rows, self.cfg)
        super().finish_step(k, resumed)

    def vote_eval(self, k: int, chosen: list[Member], resumed: bool) -> None:
        """Held-out majority vote of the top K members (each answers greedily; the vote picks a completion)."""
        logged = [r for r in self.run.read_metrics() if r.get(STEP) == k and "vote/reward_mean" in r]
        if resumed and logged and (self.run.evals / f"vote_iter_{k:06d}.jsonl").is_file():
            self.vote = {n: v for n, v in logged[-1].items() if n.startswith("vote/")}
            return
        g, per_member = self.cfg.generation, []
        self.model.train(False)
        try:
            for m in chosen:
                self.params.perturb(m.seed, m.sign, self.cfg.es.sigma)
                per_member.append(evaluate(self.model, self.tok, self.task, "eval", g.max_new_tokens, g.batch_size,
                                           self.cfg.eval.limit).rows)
        finally:
            self.params.restore()
        pick = majority_vote([[r["completion"] for r in rows] for rows in per_member])
        rows = [per_member[j][i] | {"voter": j} for i, j in enumerate(pick)]
        write_jsonl(self.run.evals / f"vote_iter_{k:06d}.jsonl", rows)
        base = self.run.evals / "iter_000000.jsonl"
        summary = summarize(rows, read_jsonl(base) if base.is_file() else None)
        self.vote = {"vote/k": float(len(chosen)), **{f"vote/{n}": v for n, v in summary.items()
                                                     if isinstance(v, (int, float))}}
        self.logger.log({STEP: k, **self.vote}, k)

    def summary_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.vote)
        if self.chosen:
            out["randopt/top_k"] = [{"index": m.index, "seed": m.seed, "sign": m.sign} for m in self.chosen]
        return out
