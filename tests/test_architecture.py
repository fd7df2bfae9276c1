"""The shape of the code: no module-level import circle anywhere in the package.

(The layer order itself is an import-linter contract in pyproject.toml, checked by `lint-imports`.)
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each is an import circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_circle_detector_finds_a_planted_circle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    g = grimp.build_graph("evotune", cache_dir=None)  # lazy (in-function) imports count too
    edges = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert strongly_connected(edges) == []


def test_task_registry_holds_the_builtins_when_base_is_imported_first():
    """The registry needs no import back into the package: Python runs tasks/__init__ (the built-ins) first."""
    code = "from evotune.tasks.base import available_tasks, get_task; print(available_tasks()); get_task('countdown')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert {"countdown", "conciseness", "safety", "jsonl"} <= set(ast.literal_eval(out))


def test_no_test_skips_when_a_hard_dependency_fails_to_import():
    """A broken install must fail the suite: only optional extras (wandb, trackio, ...) may be skipped."""
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("-", "_") for d in deps}
    hard = (names - {"pyyaml"}) | {"yaml", "evotune", "pyarrow"}  # pyarrow: a dependency of datasets
    skipped = [(p.name, m) for p in sorted((root / "tests").glob("*.py"))
               for m in re.findall(r"importorskip\(\s*[\"']([\w.]+)", p.read_text())
               if m.split(".")[0] in hard]
    assert skipped == []
