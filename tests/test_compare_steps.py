"""`compare` resumes: finished steps are reused from OUT/steps/, a missing or stale one is recomputed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from evotune import comparison
from evotune.comparison import CompareConfig, compare


def _models(tiny: Path, root: Path) -> tuple[Path, Path]:
    """A run (checkpoint = base + Δ, its config naming the base and task) and a plain model base + 2Δ."""
    from evotune.config import build_config

    sd = load_file(str(tiny / "model.safetensors"))
    g = torch.Generator().manual_seed(1)
    delta = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in sd.items()}
    out = []
    for name, f in (("a", 1.0), ("b", 2.0)):
        shutil.copytree(tiny, root / name)
        save_file({k: v + f * delta[k] for k, v in sd.items()}, str(root / name / "model.safetensors"),
                  metadata={"format": "pt"})
        out.append(root / name)
    run = root / "run"
    cfg = build_config(None, {"run_dir": str(run), "model.name": str(tiny), "task.name": "toy_letters"})
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    shutil.copytree(out[0], run / "checkpoints" / "iter_000001")
    (run / "checkpoints" / "iter_000001" / "evotune_state.json").write_text(json.dumps({"iteration": 1}))
    return run, out[1]


def _without_timing(path: Path) -> dict:
    s = json.loads(path.read_text())
    s.pop("timing")
    return s


def _refuse(name: str):
    def fail(*a, **kw):
        raise AssertionError(f"{name} was recomputed")  # not caught by compare: the test fails

    return fail


def test_rerun_reuses_finished_steps_and_recomputes_a_missing_one(tiny_model, tmp_path, monkeypatch, one_thread):
    run, b = _models(tiny_model, tmp_path)
    cfg = CompareConfig(out_dir=str(tmp_path / "rep"), limit=2, kl_prompts=1, max_new_tokens=3, lmc_points=3,
                        sigmas=[0.0, 0.01], trials=1, samples=1)
    first = compare([str(run), str(b)], cfg)
    assert first["errors"] == {} and first["complete"] is True
    out = tmp_path / "rep"
    steps = out / "steps"
    assert {p.stem for p in steps.glob("*.json")} == {
        "evaluation", "kl", "delta", "lmc", "robustness-base", "robustness-run", "robustness-b"}
    before = _without_timing(out / "summary.json")
    (steps / "lmc.json").unlink()
    for fn in ("_evaluate_all", "kl_matrix", "delta_stats", "robustness"):
        monkeypatch.setattr(comparison, fn, _refuse(fn))
    logged: list[str] = []
    again = compare([str(run), str(b)], cfg, log=logged.append)
    assert again["errors"] == {} and (steps / "lmc.json").is_file()
    assert _without_timing(out / "summary.json") == before  # the recomputed LMC step gives the same numbers
    assert {m for m in logged if m.startswith("reused")} == {
        "reused evaluation", "reused kl", "reused delta", "reused robustness:base", "reused robustness:run",
        "reused robustness:b"}
    assert "[lmc] start" in logged

    # a changed setting makes exactly the steps that depend on it stale
    monkeypatch.setattr(comparison, "lmc_curves", _refuse("lmc_curves"))
    monkeypatch.setattr(comparison, "robustness", lambda e, *a, **kw: {**before["robustness"][e.label], "stub": True})
    third = compare([str(run), str(b)], cfg.model_copy(update={"trials": 2}))
    assert all(r["stub"] for r in third["robustness"].values())  # recomputed (the report needs a full result)
    assert third["lmc"] == before["lmc"] and third["kl"] == before["kl"]


def test_step_file_names_are_portable_and_distinct():
    steps = ["lmc", "robustness:run", "robustness:org/model", "robustness:org_model", "robustness:b#2"]
    names = [comparison._file_name(s) for s in steps]
    assert names[:2] == ["lmc", "robustness-run"] and names[4] == "robustness-b#2"
    assert len(set(names)) == len(names) and not any("/" in n or ":" in n for n in names)


def test_a_step_saved_by_other_code_is_not_reused(monkeypatch, tmp_path):
    """The fingerprint covers evotune's source: after an edit to an analysis, old results are stale."""
    fp = comparison._fingerprint({"settings": {"limit": 2}})
    assert fp == comparison._fingerprint({"settings": {"limit": 2}})
    monkeypatch.setattr(comparison, "_code_hash", lambda: "edited")
    assert comparison._fingerprint({"settings": {"limit": 2}}) != fp
