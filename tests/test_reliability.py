"""Run directories you can trust: one writer, nothing lost on a crash, corrupt weights caught, one-line errors.

One test (or one parametrised test) per class of failure in docs/reliability.md.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from evotune.backends.hf import generate
from evotune.backends.models import load_model, make_tiny
from evotune.backends.resolve import resolve_entries
from evotune.checkpoints import read_state
from evotune.cli.app import TrainArgs
from evotune.cli.main import app
from evotune.config import VARIANTS, BudgetConfig, build_config, variant_of
from evotune.errors import AnalysisError, ConfigError, ModelError, RunStateError, TaskError
from evotune.runs.lock import RunLock
from evotune.runs.rundir import read_jsonl
from evotune.runs.summary import list_runs
from evotune.tasks import get_task
from evotune.tasks.base import Example, Reward, Task
from evotune.trainers import ESTrainer
from evotune.trainers.replay import replay

TESTS = Path(__file__).parent


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(tiny: Path, run: Path, iterations: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "evotune.cli.main", "train", "es", "--task", "toy_tasks:ToyLetters",
            "--model", str(tiny), "--run-dir", str(run), "--population", "4", "--sigma", "0.05", "--alpha", "0.02",
            "--iterations", str(iterations), "--prompts-per-iteration", "4", "--eval-every", "2",
            "--checkpoint-every", "2", "--threads", "1", "--no-progress", *extra]


def _one_line_error(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("error:")]  # (library progress bars aside)
    assert len(lines) == 1, text[-2000:]
    assert "Traceback" not in text
    return lines[0]


# -- one writer per run directory -------------------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder_and_lock_is_released(es_config, tmp_path):
    cfg = es_config()
    ESTrainer(cfg, progress=False).train()
    holder = subprocess.Popen(  # another process holds the run's lock, as a live training would
        [sys.executable, "-c", "import sys,time; from evotune.runs.lock import RunLock; "
         f"RunLock({cfg.run_dir!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = (Path(cfg.run_dir) / "trajectory.jsonl").read_bytes()
        longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 4})})
        with pytest.raises(RunStateError, match=rf"in use by pid {holder.pid} "):
            ESTrainer(longer, resume=True, progress=False).train()
        assert (Path(cfg.run_dir) / "trajectory.jsonl").read_bytes() == before  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock file stays, but the kernel lock is gone (stale).
    assert json.loads((Path(cfg.run_dir) / ".lock").read_text())["pid"] == holder.pid
    assert ESTrainer(longer, resume=True, progress=False).train()["steps"] == 4
    with RunLock(cfg.run_dir):  # released after train() returned
        pass


# -- every iteration's work is redone or kept on resume ------------------------------------------------
def test_resume_redoes_lost_eval_checkpoint_and_metrics_row(es_config):
    cfg = es_config(**{"es.iterations": 4})
    ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    want_state = read_state(run / "checkpoints" / "iter_000004")
    want_eval = (run / "evals" / "iter_000004.jsonl").read_bytes()
    config = (run / "config.yaml").read_bytes()
    # A kill -9 right after step 4's trajectory commit: no train row, no eval, no checkpoint, no summary.
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r["step"] < 4]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "evals" / "iter_000004.jsonl").unlink()
    shutil.rmtree(run / "checkpoints" / "iter_000004")
    (run / "summary.json").unlink()
    (run / "checkpoints" / ".iter_000004.tmp999").mkdir()  # what a killed checkpoint write leaves
    (run / ".metrics.jsonl.tmp999").write_text("{")

    summary = ESTrainer(cfg, resume=True, progress=False).train()

    assert read_state(run / "checkpoints" / "iter_000004")["checksum"] == want_state["checksum"]
    assert (run / "evals" / "iter_000004.jsonl").read_bytes() == want_eval
    step4 = [r for r in read_jsonl(run / "metrics.jsonl") if r["step"] == 4]
    assert any("train/reward_mean" in r and r.get("recovered") for r in step4)
    assert any("eval/reward_mean" in r for r in step4)
    assert "eval/reward_mean" in summary and summary["steps"] == 4
    assert not list(run.rglob(".*.tmp*"))
    assert (run / "config.yaml").read_bytes() == config


def test_resume_never_drops_summary_keys_or_rewrites_config(es_config):
    cfg = es_config()
    first = ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    config = (run / "config.yaml").read_bytes()
    again = ESTrainer(cfg, resume=True, progress=False).train()  # a finished run resumed
    assert {k for k in first if k.startswith("eval/")} <= set(again)
    assert json.loads((run / "summary.json").read_text())["eval/reward_mean"] == first["eval/reward_mean"]
    shorter = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 1})})
    with pytest.raises(ConfigError, match=r"only lengthen.*es\.iterations: 3 -> 1"):
        ESTrainer(shorter, resume=True, progress=False).train()
    assert (run / "config.yaml").read_bytes() == config


# -- corrupt weights are caught ---------------------------------------------------------------------------
def test_non_finite_base_model_is_refused_and_leaves_no_run(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-model"
    shutil.copytree(tiny_model, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    name = next(iter(tensors))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"NaN or inf"):
        load_model(str(bad))
    run = tmp_path / "run"
    res = subprocess.run(_cli(bad, run, 2), env=_env(), capture_output=True, text=True)
    assert res.returncode == 2
    assert "NaN or inf" in _one_line_error(res.stderr)
    assert not run.exists()  # a corrected rerun is not blocked


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_checkpoint_is_detected_and_rebuilt_from_trajectory(es_config, damage):
    cfg = es_config(**{"es.iterations": 4, "checkpoint_every": 2})
    ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    ckpt = run / "checkpoints" / "iter_000004"
    want = read_state(ckpt)["checksum"]
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit inside a tensor: the recorded checksum still "matches"
    else:
        data = data[: len(data) // 3]
    f.write_bytes(bytes(data))

    res = replay(run, 4)
    assert res["checksum"] == want  # the trajectory still rebuilds the exact weights
    assert res["matches_checkpoint"] is False and "damaged" in res["problem"]
    cli = CliRunner().invoke(app, ["replay", str(run), "--iteration", "4"])
    assert cli.exit_code == 1 and "damaged" in cli.output
    out = CliRunner().invoke(app, ["eval", "--model", str(run)])
    assert out.exit_code == 2 and "damaged" in out.output and "Traceback" not in out.output

    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 5})})
    with pytest.warns(UserWarning, match=r"damaged.*rebuilding iteration 4 from trajectory"):
        ESTrainer(longer, resume=True, progress=False).train()
    assert read_state(run / "checkpoints" / "iter_000004")["checksum"] == want  # deleted, then written again
    assert replay(run, 5)["matches_checkpoint"] is True


def test_non_finite_weights_are_never_saved(es_config, tiny_model):
    from evotune.runs.rundir import RunDir

    model, tok = load_model(str(tiny_model))
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(ModelError, match="not saved"):
        RunDir(es_config().run_dir).save_checkpoint(1, model, tok, {})
    ckpts = Path(es_config().run_dir) / "checkpoints"
    assert not ckpts.exists() or not list(ckpts.iterdir())


# -- compare/analyses need one base model and one architecture -----------------------------------------
def _fake_run(root: Path, name: str, base: Path, model: Path) -> Path:
    run = root / name
    cfg = build_config(None, {"run_dir": str(run), "model.name": str(base), "task.name": "toy_letters"})
    ck = run / "checkpoints" / "iter_000001"
    shutil.copytree(model, ck)
    (run / "config.yaml").write_text(cfg.to_yaml())
    (ck / "evotune_state.json").write_text("{}")
    return run


def test_compare_refuses_runs_of_different_bases_or_architectures(tiny_model, tmp_path):
    other_base = make_tiny(tmp_path / "base1", seed=1)
    small = make_tiny(tmp_path / "small", seed=0, hidden=32)
    a = _fake_run(tmp_path, "a", tiny_model, tiny_model)
    b = _fake_run(tmp_path, "b", other_base, other_base)
    c = _fake_run(tmp_path, "c", tiny_model, small)
    with pytest.raises(AnalysisError, match="different base models"):
        resolve_entries([str(a), str(b)])
    with pytest.raises(AnalysisError, match=r"different architectures \(hidden_size 64 vs 32"):
        resolve_entries([str(a), str(c)])
    assert len(resolve_entries([str(a), str(a)])) == 2
    res = CliRunner().invoke(app, ["analyze", "delta", "--base", str(other_base), "--models", str(a)])
    assert res.exit_code != 0 and "not the model the runs were trained from" in res.output


def test_an_entry_names_a_run_by_its_variant(tiny_model, tmp_path):
    """One table (config.VARIANTS) says what grpo_es and es_null are; a run's config is read back through it."""
    for name, (method, settings) in VARIANTS.items():
        assert variant_of(build_config(None, {"method": method, **settings})) == name
    assert [variant_of(build_config(None, {"method": m})) for m in ("es", "grpo")] == ["es", "grpo"]
    run = _fake_run(tmp_path, "hybrid", tiny_model, tiny_model)
    (run / "config.yaml").write_text(build_config(run / "config.yaml", {"method": "grpo", "grpo.sampler": "es"}).to_yaml())
    assert resolve_entries([str(run)])[0].method == "grpo_es"


# -- a failed start leaves nothing that blocks a corrected rerun ----------------------------------------
def test_failed_start_leaves_nothing_behind(tiny_model, tmp_path):
    data = tmp_path / "one.jsonl"
    data.write_text('{"prompt": "2+2?", "answer": "4"}\n')
    run = tmp_path / "run"
    base = ["train", "es", "--task", "jsonl", "--data", str(data), "--model", str(tiny_model), "--run-dir", str(run),
            "--population", "2", "--iterations", "1", "--threads", "1", "--no-progress", "--eval-limit", "1"]
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 2 and "empty train split" in res.output
    assert not run.exists()  # nothing at all is left of the failed start
    data.write_text("".join(json.dumps({"prompt": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(6)))
    res = CliRunner().invoke(app, base)  # the corrected command, without --resume
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(run / "trajectory.jsonl")) == 1


def test_start_killed_before_its_first_step_does_not_block_a_changed_rerun(es_config):
    cfg = es_config()
    run = Path(cfg.run_dir)
    (run / "evals").mkdir(parents=True)  # what a kill -9 during the base evaluation leaves
    (run / "config.yaml").write_text(cfg.model_copy(update={"seed": 7}).to_yaml())
    (run / "evals" / "iter_000000.jsonl").write_text("")
    with pytest.warns(UserWarning, match="never finished a step"):
        assert ESTrainer(cfg, progress=False).train()["steps"] == 3
    assert build_config(run / "config.yaml").seed == cfg.seed
    with pytest.raises(ConfigError, match="already holds a run"):  # a run with progress is never replaced
        ESTrainer(cfg, progress=False).train()


# -- silent wrong behaviour becomes validation --------------------------------------------------------
@pytest.mark.parametrize(("over", "msg"), [
    ({"es.population": 1}, "es.population"),
    ({"es.sigma": math.inf}, "es.sigma"),
    ({"es.alpha": math.nan}, "es.alpha"),
    ({"es.alpha": 1e300}, "es.alpha"),
])
def test_config_rejects_useless_values(over, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config(None, over)


@pytest.mark.parametrize(("text", "msg"), [
    ("completions=10.7", "whole number"),
    ("completions=5,completions=9", "given twice"),
    ("completions=-5", "whole number >= 1"),
    ("tokens=abc", "not a number"),
])
def test_budget_text_is_validated(text, msg):
    with pytest.raises(ConfigError, match=msg):
        BudgetConfig.parse(text)
    assert BudgetConfig.parse("completions=1e3").completions == 1000


def test_duplicate_keys_in_yaml_or_set_are_refused(tmp_path):
    from evotune.cli.common import parse_sets

    y = tmp_path / "c.yaml"
    y.write_text("budget:\n  completions: 10\n  completions: 20\n")
    with pytest.raises(ConfigError, match=r"'completions' is given twice \(line 3\)"):
        build_config(y)
    with pytest.raises(ConfigError, match="given twice"):
        parse_sets(["es.sigma=0.1", "es.sigma=0.2"])


def test_diverged_update_is_never_committed(es_config):
    cfg = es_config(**{"es.alpha": 2.9e38})  # representable, but the step overflows fp32
    with pytest.raises(ModelError, match=r"iteration 1: after the update"):
        ESTrainer(cfg, progress=False).train()
    assert not (Path(cfg.run_dir) / "trajectory.jsonl").exists()


def test_flag_beats_set_beats_yaml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"es": {"sigma": 0.1, "alpha": 0.1, "population": 6}}))
    args = TrainArgs(y, None, True, {"seed": None}, {"es.sigma": 0.2, "es.alpha": 0.2})
    cfg = args.build(False, {"es.sigma": 0.3, "es.alpha": None, "es.population": None})
    assert (cfg.es.sigma, cfg.es.alpha, cfg.es.population) == (0.3, 0.2, 6)


def test_jsonl_data_errors_are_one_line_with_their_row(tmp_path):
    def task(lines: bytes) -> Task:
        p = tmp_path / "d.jsonl"
        p.write_bytes(lines)
        return get_task("jsonl", data=str(p))

    with pytest.raises(TaskError, match=r"line 2 is not UTF-8"):
        task(b'{"prompt": "a?", "answer": "x"}\n{"prompt": "caf\xe9?", "answer": "y"}\n').split("train")
    with pytest.raises(TaskError, match=r"same prompt but different answers"):
        task(b'{"prompt": "a?", "answer": "x"}\n{"prompt": "a?", "answer": "y"}\n').split("train")
    with pytest.raises(TaskError, match=r"share the id 'q1'"):
        task(b'{"id": "q1", "prompt": "a?", "answer": "x"}\n{"id": "q1", "prompt": "b?", "answer": "y"}\n').split("train")
    ok = task(b'{"prompt": "a?", "answer": "x"}\n{"prompt": "a?", "answer": "x"}\n{"prompt": "b?", "answer": "y"}\n')
    assert len(ok.split("train")) + len(ok.split("eval")) == 2


class _BadReward(Task):
    name = "bad_reward"

    def __init__(self, score: object) -> None:
        super().__init__()
        self.value = score

    def build(self) -> tuple[list[Example], list[Example]]:
        return [], []

    def reward(self, completion: str, example: Example) -> Reward:
        return Reward(self.value, {}, False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("score", "msg"), [(1e308, "within"), ("0.5", "must be a number"), (math.nan, "finite")])
def test_reward_scores_must_be_usable_numbers(score, msg):
    with pytest.raises(TaskError, match=msg):
        _BadReward(score).score("x", Example(id="e1", prompt="p", answer=None))


def test_task_module_import_problems_are_explained(tmp_path, monkeypatch):
    (tmp_path / "broken_task.py").write_text("class T(:\n")
    (tmp_path / "local_task.py").write_text("from toy_tasks import ToyLetters as T\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskError, match=r"broken_task.py line 1"):
        get_task("broken_task:T")
    other = tmp_path / "cwd"
    other.mkdir()
    (other / "here_task.py").write_text("X = 1\n")
    monkeypatch.chdir(other)
    with pytest.raises(TaskError, match=r"PYTHONPATH=\."):
        get_task("here_task:T")


def test_generation_inputs_are_validated(tiny_model, tmp_path):
    model, tok = load_model(str(tiny_model))
    with pytest.raises(ModelError, match="temperature"):
        generate(model, tok, ["hi"], 4, temperature=-1)
    model.config.max_position_embeddings = 16
    with pytest.raises(ModelError, match="exceeds the model's context of 16"):
        generate(model, tok, ["word " * 20], 4)
    base = ["eval", "--model", str(tiny_model), "--task", "toy_letters"]
    for extra, msg in [(["--temperature", "-1"], "temperature"), (["--out", str(tmp_path)], "is a directory")]:
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 2 and msg in res.output, (extra, res.output)
    # counts and sizes are bounded by the options themselves: one usage line from the console script
    import subprocess
    import sys

    for opt in ("--max-new-tokens", "--n-eval", "--limit", "--batch-size"):
        res = subprocess.run([sys.executable, "-m", "evotune.cli.main", *base, opt, "0"], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2 and f"Invalid value for '{opt}'" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


# -- logs and OS problems ----------------------------------------------------------------------------
def test_corrupt_metrics_line_does_not_hide_runs(es_config, tmp_path):
    cfg = es_config()
    ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0] + "{corrupt\n" + "".join(lines[1:]))
    with pytest.warns(UserWarning, match="metrics.jsonl:2: corrupt"):
        facts = list_runs(run.parent)
    assert facts[0]["steps"] == 3 and facts[0]["final_reward"] is not None
    (run.parent / "broken").mkdir()
    (run.parent / "broken" / "config.yaml").write_text("es: [unclosed\n")
    res = CliRunner().invoke(app, ["runs", str(run.parent)])
    assert res.exit_code == 0 and run.name in res.output, res.output
    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 4})})
    assert ESTrainer(longer, resume=True, progress=False).train()["steps"] == 4  # resume repairs the log


def test_unwritable_run_directory_is_one_line(es_config, monkeypatch):
    import evotune.runs.lock as lock

    def refuse(path: object, *a: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(lock.os, "open", refuse)
    with pytest.raises(RunStateError, match="cannot write to run directory .*choose a writable --run-dir"):
        ESTrainer(es_config(), progress=False).train()


def test_ctrl_c_says_how_to_resume_and_resume_finishes(tiny_model, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(tiny_model, run, 8), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,  # a background job inherits SIGINT ignored: undo
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl(run / "trajectory.jsonl")) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    done = len(read_jsonl(run / "trajectory.jsonl"))
    assert done < 8
    res = subprocess.run([*_cli(tiny_model, run, 8), "--resume"], env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(run / "trajectory.jsonl")] == list(range(1, 9))


# -- experiment tracking -------------------------------------------------------------------------------
@pytest.mark.slow  # ~75 s: wandb's and trackio's own start-up and shutdown
def test_report_to_tensorboard_wandb_trackio_offline(es_config, tmp_path, monkeypatch):
    """Each tracker really receives the shared metric names (wandb offline, trackio local)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = es_config(**{"es.iterations": 2, "report_to": "tensorboard,wandb,trackio"})
    assert cfg.report_to == ["tensorboard", "wandb", "trackio"]
    ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert {"train/reward_mean", "eval/reward_mean", "budget/completions"} <= set(acc.Tags()["scalars"])
    assert os.environ.get("WANDB_MODE") == "offline"
    wandb_files = list((run / "wandb").rglob("*.wandb"))
    assert wandb_files and b"train/reward_mean" in wandb_files[0].read_bytes()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "trackio").rglob("*") if p.is_file())
    assert b"train/reward_mean" in stored and b"eval/reward_mean" in stored
    with pytest.raises(ConfigError, match="report_to"):
        build_config(None, {"report_to": "mlflow"})
    assert build_config(None, {"report_to": "none"}).report_to == []


def test_ray_failures_and_os_errors_are_one_line(capsys):
    import ray.exceptions
    import typer

    from evotune.cli.common import friendly

    def boom(exc: BaseException) -> None:
        raise exc

    for exc, msg in [(ray.exceptions.RaySystemError("raylet died\nlong trace"), "Ray failed (RaySystemError: System error: raylet died)"),
                     (PermissionError(13, "Permission denied", "/ro/run/config.yaml"), "/ro/run/config.yaml: Permission denied")]:
        with pytest.raises(typer.Exit) as info:
            friendly(boom)(exc)
        assert info.value.exit_code == 2
        assert msg in _one_line_error(capsys.readouterr().err)
    with pytest.raises(typer.Exit) as info:  # a bug: one line that says so (exit 1), the traceback under --debug
        friendly(boom)(KeyError("x"))
    assert info.value.exit_code == 1 and "internal error (KeyError: 'x')" in _one_line_error(capsys.readouterr().err)


def test_an_append_after_a_torn_line_cuts_the_torn_line_off_first(tmp_path):
    """kill -9 mid-append leaves a line without its newline; the next row must not be glued onto it."""
    from evotune.runs.rundir import append_jsonl, read_jsonl

    path = tmp_path / "trajectory.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "fitn')
    append_jsonl(path, {"step": 2})
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}] and path.read_text().endswith('{"step": 2}\n')
    only = tmp_path / "only.jsonl"
    only.write_text('{"step": 1, "fi')  # the torn line is the whole file
    append_jsonl(only, {"step": 1})
    assert read_jsonl(only) == [{"step": 1}]


@pytest.mark.parametrize("edit,says", [
    (lambda r: r.update(noise=3), "records noise version 3"),
    (lambda r: r.update(fitness=r["fitness"][:1]), "no finite fitness value for each of its"),
    (lambda r: r.update(fitness=["a"] * len(r["fitness"])), "no finite fitness value"),
    (lambda r: r.update(seeds=[-1, *r["seeds"]]), "signs (±1) for"),
    (lambda r: r.update(step="x"), "is for step x"),
])
def test_a_hand_edited_trajectory_row_is_named_in_one_line(edit, says, tmp_path):
    """Replay and resume read every row's fields before using them: a damaged row is one line, not a crash."""
    import json

    from evotune.errors import RunStateError
    from evotune.es.trajectory import read_trajectory

    rows = [{"step": k, "seeds": [11, 12], "signs": [1, 1], "fitness": [0.5, -0.5], "noise": 2} for k in (1, 2)]
    assert read_trajectory_ok(tmp_path, rows)
    edit(rows[1])
    path = tmp_path / "trajectory.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RunStateError, match="line 2 ") as info:
        read_trajectory(path)
    assert says in str(info.value) and "keep lines 1–1 only and --resume" in str(info.value)


def read_trajectory_ok(tmp_path, rows) -> bool:
    import json

    from evotune.es.trajectory import read_trajectory

    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_trajectory(path) == rows


def test_run_files_of_the_wrong_json_type_are_named_or_dropped(tmp_path):
    """A hand-damaged state file is a one-line ModelError (resume then rebuilds that checkpoint); a metrics row
    with a field of the wrong type is dropped on resume like a corrupt line."""
    import json

    from evotune.checkpoints import read_state
    from evotune.errors import ModelError
    from evotune.runs.rundir import keep_rows, read_jsonl

    ck = tmp_path / "iter_000002"
    ck.mkdir()
    for text in ('{"files": 5}', "[1]", "{not json", '{"files": {"model.safetensors": 3}}'):
        (ck / "evotune_state.json").write_text(text)
        with pytest.raises(ModelError, match="delete the checkpoint folder and --resume"):
            read_state(ck)
    (ck / "evotune_state.json").write_text(json.dumps({"files": {"model.safetensors": "ab"}, "checksum": "c"}))
    assert read_state(ck)["checksum"] == "c"
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n{"step": "x"}\n{"step": 3}\n')
    with pytest.warns(UserWarning, match="wrong type"):
        keep_rows(metrics, lambda r: r.get("step", 0) <= 2)
    assert read_jsonl(metrics) == [{"step": 1}]
