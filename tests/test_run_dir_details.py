"""Issue 26, classes 7 and 8: run-directory details and what a user sees on the way.

Each test drives the real code path (a real lock holder in another process, a real interrupted
checkpoint write, real ES runs and resumes, peft's own adapter writer under two hash seeds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evotune.errors import RunStateError
from evotune.runs.lock import RunLock
from evotune.runs.rundir import OPTIMIZER_FILE, RunDir, read_jsonl
from evotune.trainers import ESTrainer


# -- class 7: the lock names the live holder ---------------------------------------------------------------
def test_in_use_names_the_live_holder_not_the_pid_written_in_the_file(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from evotune.runs.lock import RunLock
            RunLock({str(run)!r}).acquire()
            print("held", flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # what a forked worker or another tool leaves: the file names a pid that does not hold the lock
        (run / ".lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere"}))
        with pytest.raises(RunStateError) as info:
            RunLock(run).acquire()
        msg = str(info.value)
        assert f"in use by pid {holder.pid} on " in msg and "999999" not in msg
        assert "\n" not in msg and "--run-dir" in msg
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run):  # the kernel released a killed holder's lock: the directory is free again
        pass


# -- class 7: an interrupted checkpoint write leaves nothing behind ----------------------------------------
def test_ctrl_c_during_a_checkpoint_write_leaves_no_temp_folder(tiny_model, tmp_path):
    from evotune.backends.models import load_model

    model, tok = load_model(str(tiny_model), "float32", "cpu")
    rd = RunDir(tmp_path / "run")

    def interrupted(path: Path) -> None:
        model.save_pretrained(path, safe_serialization=True)  # half the checkpoint is on disk ...
        raise KeyboardInterrupt  # ... when the user presses Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        rd.save_checkpoint(1, model, tok, {"iteration": 1}, write_model=interrupted)
    ckpts = tmp_path / "run" / "checkpoints"
    assert not rd.checkpoint_path(1).exists()
    assert [p.name for p in ckpts.iterdir()] == [] if ckpts.exists() else True
    # and a complete write still lands, under its final name only
    done = rd.save_checkpoint(1, model, tok, {"iteration": 1})
    assert done == rd.checkpoint_path(1) and [p.name for p in ckpts.iterdir()] == ["iter_000001"]


# -- class 7: a stateful optimizer whose every step was a no-op still writes its state ---------------------
def test_adam_run_of_no_op_iterations_resumes_from_its_checkpoint(es_config, monkeypatch):
    from evotune.tasks import get_task
    from evotune.tasks.base import Reward

    task_cls = type(get_task("toy_letters"))
    monkeypatch.setattr(task_cls, "reward", lambda self, completion, example: Reward(0.0, {}, False))  # all-equal fitness: no step
    cfg = es_config(**{"es.optimizer": "adam", "es.iterations": 2, "checkpoint_every": 1, "eval.every": 0})
    ESTrainer(cfg, progress=False).train()
    run = Path(cfg.run_dir)
    ckpt = run / "checkpoints" / "iter_000002"
    assert (ckpt / OPTIMIZER_FILE).is_file()  # empty, but present: resume needs it to trust the checkpoint
    longer = cfg.model_copy(update={"es": cfg.es.model_copy(update={"iterations": 3})})
    ESTrainer(longer, resume=True, progress=False).train()
    assert ckpt.is_dir()  # kept, not discarded and rebuilt
    assert [r["step"] for r in read_jsonl(run / "trajectory.jsonl")] == [1, 2, 3]
    assert not any(r.get("recovered") for r in read_jsonl(run / "metrics.jsonl"))


# -- class 7: a resumed run's summary is the summary an uninterrupted run writes ---------------------------
def test_interrupted_and_resumed_summary_has_exactly_the_uninterrupted_keys(es_config, tmp_path):
    straight = es_config(**{"es.iterations": 4, "run_dir": str(tmp_path / "straight")})
    want = ESTrainer(straight, progress=False).train()
    first = es_config(**{"es.iterations": 2, "run_dir": str(tmp_path / "resumed")})
    ESTrainer(first, progress=False).train()
    longer = first.model_copy(update={"es": first.es.model_copy(update={"iterations": 4})})
    got = ESTrainer(longer, resume=True, progress=False).train()
    assert set(got) == set(want)
    on_disk = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert set(on_disk) == set(json.loads((tmp_path / "straight" / "summary.json").read_text()))
    assert on_disk["eval/reward_mean"] == pytest.approx(want["eval/reward_mean"])  # same seed, same weights


# -- class 7: LoRA adapter_config.json is byte-reproducible across interpreters --------------------------
def test_lora_adapter_config_bytes_do_not_depend_on_the_hash_seed(tiny_model, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from evotune.backends.lora import attach_lora, save_lora
        from evotune.backends.models import load_model
        from evotune.config import LoRAConfig
        lora = LoRAConfig(enabled=True, rank=2, target_modules=["q_proj", "v_proj", "k_proj", "o_proj", "down_proj"])
        model, _ = load_model({str(tiny_model)!r}, "float32", "cpu")
        named = dict(attach_lora(model, lora, 0))
        save_lora(sys.argv[1], model, named, lora, "base")
    """)
    out = {}
    procs = {seed: subprocess.Popen([sys.executable, "-c", script, str(tmp_path / seed)], stderr=subprocess.PIPE,
                                    text=True, env=dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS="1"))
             for seed in ("1", "2", "3")}  # at once: three interpreters start in the time of two
    for seed, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        out[seed] = (tmp_path / seed / "adapter" / "adapter_config.json").read_bytes()
    assert out["1"] == out["2"] == out["3"]
    assert json.loads(out["1"])["target_modules"] == sorted(["q_proj", "v_proj", "k_proj", "o_proj", "down_proj"])


# -- class 8: what a user sees on the way ------------------------------------------------------------------
def test_progress_bar_shows_no_eval_before_an_eval_exists(es_config, capsys):
    cfg = es_config(**{"es.iterations": 2, "eval.every": 2})
    ESTrainer(cfg, progress=True).train()
    err = capsys.readouterr().err
    assert "eval=nan" not in err
    assert "eval=" in err  # once iteration 2's eval exists, the bar shows it


def test_checkpoint_writes_turn_off_transformers_shard_bars_and_restore_them(tiny_model, tmp_path):
    from transformers.utils import logging as hf_logging

    from evotune.backends.models import load_model

    model, tok = load_model(str(tiny_model), "float32", "cpu")
    seen = []

    def spy(path: Path) -> None:
        seen.append(hf_logging.is_progress_bar_enabled())
        model.save_pretrained(path, safe_serialization=True)

    hf_logging.enable_progress_bar()
    RunDir(tmp_path / "run").save_checkpoint(1, model, tok, {"iteration": 1}, write_model=spy)
    assert seen == [False] and hf_logging.is_progress_bar_enabled()


def test_runs_listing_is_whole_tab_separated_values_when_not_a_terminal(es_config, tmp_path):
    from evotune.cli.main import app

    name = "a-run-directory-name-long-enough-that-any-terminal-table-would-fold-or-cut-it-" + "x" * 60
    cfg = es_config(**{"es.iterations": 1, "run_dir": str(tmp_path / "runs" / name)})
    ESTrainer(cfg, progress=False).train()
    res = CliRunner().invoke(app, ["runs", str(tmp_path / "runs")])  # CliRunner's stdout is not a TTY
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split("\t")[0] == "run" and len(lines) == 2
    row = lines[1].split("\t")
    assert len(row) == len(lines[0].split("\t")) and row[0].endswith(name) and row[1] == "es"
