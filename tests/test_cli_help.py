"""`--help` of every command starts without the heavy libraries (it once took 3-4 s importing torch)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "ray", "trl")

# Runs in a fresh interpreter: walks the whole command tree, asks each command for its help, and
# records which heavy modules are loaded after it (so a regression names the command that caused it).
PROBE = f"""
import contextlib, io, json, sys, typer
from evotune.cli.main import app

def walk(c, path):
    yield path
    for name, sub in sorted(getattr(c, "commands", {{}}).items()):
        yield from walk(sub, [*path, name])

root = typer.main.get_command(app)
seen = []
for path in walk(root, []):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        root.main([*path, "--help"], prog_name="evotune", standalone_mode=False)
    seen.append([" ".join(path), "Usage" in text.getvalue(), sorted(m for m in {HEAVY!r} if m in sys.modules)])
print(json.dumps(seen))
"""


def test_help_of_every_command_leaves_torch_transformers_ray_and_trl_unimported():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    commands = {cmd for cmd, _, _ in seen}
    assert {"", "train es", "train grpo", "analyze kl", "analyze passk", "judge", "serve scorer", "compare",
            "study", "sweep es", "continual", "eval", "replay", "runs", "tasks", "model tiny"} <= commands
    assert all(printed for _, printed, _ in seen), [cmd for cmd, printed, _ in seen if not printed]
    loaded = [(cmd or "evotune", mods) for cmd, _, mods in seen if mods]
    assert not loaded, f"--help imported heavy modules (first: {loaded[0]})"
