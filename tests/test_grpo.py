"""GRPO baseline on the tiny model: learning direction, ES-comparable run files, budgets, errors, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import evotune.grpo.trl as grpo_trainer
from evotune.backends.models import load_model
from evotune.checkpoints import latest_checkpoint, read_state
from evotune.cli.main import app
from evotune.config import build_config
from evotune.errors import ConfigError
from evotune.runs.rundir import read_jsonl
from evotune.runs.summary import list_runs
from evotune.tasks import build_task
from evotune.trainers import ESTrainer
from evotune.trainers.grpo import GRPOTrainer

SHARED_KEYS = ("step", "train/reward_mean", "train/reward_std", "budget/completions", "budget/completion_tokens",
               "budget/prompt_tokens", "budget/tokens", "time/wall", "time/generate", "time/score", "time/update",
               "time/iteration")


@pytest.fixture(autouse=True)
def _restore_threads():
    """Runs set the process-wide torch thread count; leave it as other test files expect."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def grpo_config(tiny_model, tmp_path):
    def make(**over: Any):
        base = {
            "method": "grpo",
            "run_dir": str(tmp_path / "grpo"),
            "model.name": str(tiny_model),
            "task.name": "toy_letters",
            "grpo.num_generations": 2,
            "grpo.prompts_per_step": 2,
            "grpo.steps": 3,
            "grpo.learning_rate": 1e-3,
            "grpo.beta": 0.0,  # no reference model: faster; the budget test turns KL on
            "generation.max_new_tokens": 4,
            "eval.every": 0,
            "eval.limit": 2,
            "checkpoint_every": 1,
            "threads": 1,  # tiny model: one thread is as fast and avoids spin-waiting on a busy machine
        }
        base.update(over)
        return build_config(None, base)

    return make


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


# -- (a) the update direction ---------------------------------------------------------------------
def _advantage_weighted_logprob(model: Any, tok: Any, batch: list[tuple[str, list[int], float]], k: int) -> float:
    """GRPO's surrogate on one sampled batch: mean_i A_i · mean_t log π(o_i,t), A_i = r_i − group mean.

    A policy-gradient step increases exactly this quantity: higher-reward completions of a group become
    more likely relative to lower-reward ones.
    """
    rewards = torch.tensor([r for _, _, r in batch])
    adv = rewards - rewards.view(-1, k).mean(1).repeat_interleave(k)
    total = 0.0
    with torch.no_grad():
        for (prompt, ids, _), a in zip(batch, adv.tolist(), strict=True):
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            x = torch.tensor([p + ids])
            logp = model(input_ids=x).logits[0, len(p) - 1 : -1].float().log_softmax(-1)
            total += a * logp.gather(1, torch.tensor(ids)[:, None]).mean().item()
    return total / len(batch)


def test_grpo_step_moves_weights_toward_higher_reward(grpo_config, tiny_model, monkeypatch):
    """One real TRL step on toy_letters (reward = fraction of 'a'), then score the step's own samples.

    The sampled completions and rewards are recorded from inside the reward function, so the check is
    exact and deterministic: with a small learning rate Adam's first step is ≈ lr·sign(gradient), so the
    surrogate must rise by a first-order margin (observed ~3e-3 over seeds 0–3, asserted > 1e-4).
    """
    seen: list[tuple[int, list[int], float]] = []
    real = grpo_trainer.make_reward_fn

    def recording(*args: Any) -> Any:
        fn = real(*args)

        def task_reward(prompts: list[str], completion_ids: list[list[int]], example_index: list[int],
                        step: list[int], **kw: Any) -> list[float]:
            out = fn(prompts, completion_ids, example_index, step, **kw)
            seen.extend(zip(example_index, [list(c) for c in completion_ids], out, strict=True))
            return out

        return task_reward

    monkeypatch.setattr(grpo_trainer, "make_reward_fn", recording)
    k = 8
    cfg = grpo_config(**{"grpo.steps": 1, "grpo.num_generations": k, "grpo.beta": 0.0, "grpo.scale_rewards": "none",
                         "grpo.learning_rate": 1e-4, "generation.max_new_tokens": 4, "eval.limit": 1})
    runner = GRPOTrainer(cfg, progress=False)
    runner.train()
    assert len(seen) == 2 * k
    assert len({r for _, _, r in seen}) > 1, "toy reward gave no signal"
    task = build_task(runner.cfg.task)
    train = task.split("train")
    base, tok = load_model(str(tiny_model))
    batch = [(task.render(train[i], tok), ids, r) for i, ids, r in seen]
    trained = AutoModelForCausalLM.from_pretrained(Path(cfg.run_dir) / "checkpoints" / "iter_000001").train(False)
    before = _advantage_weighted_logprob(base, tok, batch, k)
    after = _advantage_weighted_logprob(trained, tok, batch, k)
    assert after > before + 1e-4, (before, after)
    assert any(not torch.equal(a, b) for a, b in zip(base.state_dict().values(), trained.state_dict().values(), strict=True))


# -- (b)+(c) comparable files, budget stop for both methods -----------------------------------------
def test_es_and_grpo_runs_are_comparable_and_stop_at_the_budget(es_config, grpo_config, tmp_path):
    budget = 8
    es_cfg = es_config(run_dir=str(tmp_path / "es"), threads=1, **{"es.iterations": 4, "es.prompts_per_iteration": 2,
                                                        "budget.completions": budget, "generation.max_new_tokens": 4,
                                                        "eval.limit": 2})
    gr_cfg = grpo_config(**{"grpo.steps": 5, "budget.completions": budget, "grpo.beta": 0.04})
    es_sum = ESTrainer(es_cfg, progress=False).train()
    gr_sum = GRPOTrainer(gr_cfg, progress=False).train()

    per_iter = {"es": 4 * 2, "grpo": 2 * 2}  # population × prompts, prompts × K
    for name, s in (("es", es_sum), ("grpo", gr_sum)):
        assert "budget spent" in s["stop_reason"], s
        assert budget <= s["budget/completions"] < budget + per_iter[name]
    assert gr_sum["steps"] == 2 and es_sum["steps"] == 1

    es_rows, gr_rows = read_jsonl(tmp_path / "es" / "metrics.jsonl"), read_jsonl(tmp_path / "grpo" / "metrics.jsonl")
    for rows in (es_rows, gr_rows):
        train = [r for r in rows if "train/reward_mean" in r]
        evals = [r for r in rows if "eval/reward_mean" in r]
        assert train and all(k in train[-1] for k in SHARED_KEYS)
        assert evals[0]["step"] == 0 and evals[-1]["step"] == train[-1]["step"]
        assert train[-1]["budget/tokens"] == train[-1]["budget/prompt_tokens"] + train[-1]["budget/completion_tokens"]
    es_eval_keys = {k for r in es_rows if "eval/reward_mean" in r for k in r}
    gr_eval_keys = {k for r in gr_rows if "eval/reward_mean" in r for k in r}
    assert es_eval_keys == gr_eval_keys
    gr_train = [r for r in gr_rows if "train/reward_mean" in r][-1]
    for key in ("grpo/loss", "grpo/kl", "grpo/entropy", "grpo/reward_std", "grpo/clip_ratio", "grpo/learning_rate",
                "grpo/grad_norm"):
        assert key in gr_train, key
    # the GRPO run's own budget bookkeeping: every completion costs its prompt and its generated tokens
    assert gr_train["budget/completion_tokens"] <= 4 * gr_train["budget/completions"]

    es_evals = sorted((tmp_path / "es" / "evals").iterdir())
    gr_evals = sorted((tmp_path / "grpo" / "evals").iterdir())
    assert set(read_jsonl(es_evals[-1])[0]) == set(read_jsonl(gr_evals[-1])[0])
    for run in ("es", "grpo"):
        ck = latest_checkpoint(tmp_path / run)
        assert ck is not None and read_state(ck)["method"] == run
        assert AutoModelForCausalLM.from_pretrained(ck).num_parameters() > 0
    facts = {f["method"]: f for f in list_runs(tmp_path)}
    assert facts["grpo"]["completions"] == gr_sum["budget/completions"] and facts["grpo"]["final_reward"] is not None


# -- (d) clear config errors ------------------------------------------------------------------------
def test_micro_batches_are_bounded_by_default(grpo_config, tmp_path):
    """Unset accumulation splits a step into the fewest equal micro-batches of ≤ 8 completions."""
    from evotune.grpo.trl import accumulation_steps, grpo_args
    from evotune.runs.rundir import RunDir

    for p, k, want in [(4, 8, 4), (2, 8, 2), (2, 3, 1), (3, 3, 3), (1, 16, 2), (5, 2, 2)]:
        cfg = grpo_config(**{"grpo.prompts_per_step": p, "grpo.num_generations": k})
        assert accumulation_steps(cfg) == want, (p, k)
        args = grpo_args(cfg, RunDir(tmp_path / f"r{p}{k}"), 4)
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == p * k
        assert args.per_device_train_batch_size <= 8
    cfg = grpo_config(**{"grpo.prompts_per_step": 4, "grpo.num_generations": 8, "grpo.gradient_accumulation_steps": 1})
    assert accumulation_steps(cfg) == 1  # an explicit value is kept


def test_indivisible_batch_is_a_config_error_naming_the_numbers(grpo_config, tmp_path):
    with pytest.raises(ConfigError) as exc:  # refused where the config is built, before any trainer exists
        grpo_config(**{"grpo.prompts_per_step": 1, "grpo.num_generations": 3, "grpo.gradient_accumulation_steps": 2})
    msg = str(exc.value)
    assert "1 × 3 = 3" in msg and "gradient_accumulation_steps=2" in msg and "divisor of 3 (1, 3)" in msg
    assert "Value error" not in msg
    assert not (tmp_path / "grpo").exists(), "a rejected config must not leave a run directory"
    with pytest.raises(ConfigError, match="prompts_per_step=30 exceeds the 24 train prompts"):
        GRPOTrainer(grpo_config(**{"grpo.prompts_per_step": 30}), progress=False).train()
    with pytest.raises(ConfigError, match="grpo.loss_type 'ppo' is not supported; use one of grpo, dr_grpo"):
        grpo_config(**{"grpo.loss_type": "ppo"})
    res = CliRunner().invoke(app, ["train", "grpo", "--task", "toy_letters", "--run-dir", str(tmp_path / "cli"),
                                   "--prompts-per-step", "1", "--num-generations", "3", "--grad-accum", "2"])
    assert res.exit_code == 2 and "1 × 3 = 3" in res.output


# -- (e) resume -------------------------------------------------------------------------------------
def test_resume_after_budget_and_step_stops_matches_uninterrupted_run(grpo_config, tiny_model, tmp_path):
    """Stop by budget after step 1, resume to step 2 (grpo.steps), extend to step 3: same weights as one run.

    Two micro-batches per step, so resume must also skip the repeated micro-batches TRL's sampler yields.
    """
    full = grpo_config(run_dir=str(tmp_path / "full"), **{"checkpoint_every": 3, "grpo.gradient_accumulation_steps": 2,
                                                              "grpo.beta": 0.04})
    GRPOTrainer(full, progress=False).train()

    run = tmp_path / "parts"
    common = ["--task", "toy_letters", "--model", str(tiny_model), "--run-dir", str(run), "--no-progress"]
    first = ["train", "grpo", *common, "--num-generations", "2", "--prompts-per-step", "2", "--lr", "1e-3",
             "--max-new-tokens", "4", "--eval-every", "0", "--eval-limit", "2", "--checkpoint-every", "3",
             "--threads", "1", "--steps", "2", "--budget", "completions=4", "--grad-accum", "2", "--beta", "0.04"]
    res = CliRunner().invoke(app, first)
    assert res.exit_code == 0, res.output
    assert read_state(latest_checkpoint(run))["iteration"] == 1  # stopped by the budget after step 1
    res = CliRunner().invoke(app, ["train", "grpo", *common, "--resume", "--budget", "completions=1000"])
    assert res.exit_code == 0, res.output
    assert read_state(latest_checkpoint(run))["iteration"] == 2  # stopped by grpo.steps
    res = CliRunner().invoke(app, ["train", "grpo", *common, "--resume", "--steps", "3"])
    assert res.exit_code == 0, res.output

    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["budget/completions"] == 3 * 4
    ref = [r for r in read_jsonl(tmp_path / "full" / "metrics.jsonl") if "train/reward_mean" in r]
    assert [r["train/reward_mean"] for r in rows] == [r["train/reward_mean"] for r in ref]
    a = _weights(tmp_path / "full" / "checkpoints" / "iter_000003")
    b = _weights(run / "checkpoints" / "iter_000003")
    assert all(torch.equal(a[n], b[n]) for n in a), "resumed weights differ from the uninterrupted run"
    assert [p.name for p in (run / "trl").iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-3"]
