"""The Task API: seeded disjoint splits, prompt construction and a reward on the completion only.

Every path that scores text (ES fitness, GRPO reward, `evotune eval`, analyses) goes through
`Task.score`, so training and evaluation can never disagree about what a completion earned.
"""

from __future__ import annotations

import importlib
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evotune.errors import (
    DEBUG_HINT,
    EvotuneError,
    ExampleTypeError,
    PluginError,
    RewardTimeout,
    TaskError,
    describe,
    raised_at,
)
from evotune.hashing import stable_int
from evotune.timeouts import time_limit

MAX_SCORE = 1e100  # larger scores overflow the float sums of ES fitness shaping and summaries
# Text far beyond any model's context is refused before a tokenizer sees it: a 30 MB prompt took
# 79 s and 5.6 GB to tokenize before its context error.
MAX_TEXT_CHARS = 1_000_000

Split = Literal["train", "eval"]


def text_problem(text: str) -> str | None:
    """Why `text` cannot be model input (too long, or a lone surrogate), or None.

    A lone surrogate (`"\\ud800"`) is valid JSON but not Unicode: it loads, then crashes the
    tokenizer or the writer of a results file mid-run, so every place text enters refuses it.
    """
    if len(text) > MAX_TEXT_CHARS:
        return f"a text of {len(text):,} characters exceeds {MAX_TEXT_CHARS:,}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"text holds a lone surrogate {text[exc.start]!r} at character {exc.start} (not valid Unicode)"
    return None


@dataclass(frozen=True)
class Example:
    """One item: `prompt` is the user message; `answer` is whatever the reward needs.

    Field types are checked here, at construction, because a wrong type otherwise fails late or not
    at all (a string where a tuple is expected is silently indexed by character). The shape of
    `answer` belongs to the task: `Task.answer_error` checks it before the first score.
    """

    id: str
    prompt: str
    answer: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in (("id", str), ("prompt", str), ("meta", dict)):
            got = getattr(self, name)
            if not isinstance(got, kind):
                raise ExampleTypeError(
                    f"Example.{name} must be a {kind.__name__}, got {type(got).__name__} {got!r:.60}"
                )


@dataclass(frozen=True)
class Reward:
    """A score, its named parts (they sum to `score` unless a task says otherwise) and correctness."""

    score: float
    components: dict[str, float]
    correct: bool


@dataclass(frozen=True)
class PromptStyle:
    """How an example's prompt becomes model input text."""

    chat_template: bool = True
    system_prompt: str | None = None
    response_prefix: str = ""


def disjoint_split(
    items: Sequence[Example],
    n_train: int,
    n_eval: int,
    seed: int,
    key: Callable[[Example], str] | None = None,
) -> tuple[list[Example], list[Example]]:
    """Shuffle once with `seed`, take eval first, then train from the rest.

    Items are de-duplicated on `key` (the prompt by default) before splitting, so a prompt can
    never sit in both splits; the disjointness is asserted, not assumed.
    """
    key = key or (lambda e: e.prompt)
    seen: set[str] = set()
    uniq = []
    for e in items:
        k = key(e)
        if k not in seen:
            seen.add(k)
            uniq.append(e)
    if n_train + n_eval > len(uniq):
        raise TaskError(
            f"asked for {n_train} train + {n_eval} eval items but only {len(uniq)} distinct ones exist"
        )
    order = list(range(len(uniq)))
    random.Random(seed).shuffle(order)
    ev = [uniq[i] for i in order[:n_eval]]
    tr = [uniq[i] for i in order[n_eval : n_eval + n_train]]
    assert not ({key(e) for e in tr} & {key(e) for e in ev}), "train/eval splits overlap"
    return tr, ev


class Task(ABC):
    """Base class: subclasses set `name`, implement `build` and `reward`.

    `build()` returns (train, eval) example lists and is called once, lazily. Splits are a pure
    function of the constructor arguments (seed, sizes, data path).
    """

    name: str = "task"
    default_n_train: int = 200
    default_n_eval: int = 200
    # Tokens a completion needs to be gradable; used as the default generation length.
    default_max_new_tokens: int = 64
    # Seconds one reward call may take before it is reported as hung (main thread only).
    reward_timeout: float = 10.0
    # The options this task understands; None (a user's own task) takes any. Checked once, here.
    known_options: tuple[str, ...] | None = None

    def __init__(
        self,
        seed: int = 0,
        n_train: int | None = None,
        n_eval: int | None = None,
        prompt_style: PromptStyle | None = None,
        **options: Any,
    ) -> None:
        self.seed = seed
        self.n_train = self.default_n_train if n_train is None else n_train
        self.n_eval = self.default_n_eval if n_eval is None else n_eval
        if self.n_train < 0 or self.n_eval < 0:
            raise TaskError(f"{self.name}: split sizes must be >= 0 (got n_train={n_train}, n_eval={n_eval})")
        self.prompt_style = prompt_style or PromptStyle()
        self.options = options
        self._given = (n_train, n_eval)  # the user's sizes: where None, a data file's own size wins
        self._splits: tuple[list[Example], list[Example]] | None = None
        if self.known_options is not None:
            self._check_options(self.known_options)

    def _check_options(self, known: tuple[str, ...]) -> None:
        unknown = sorted(k for k, v in self.options.items() if k not in known and v is not None)
        if unknown:
            hint = " (this task keeps its own reward)" if "reward" in unknown else ""
            raise TaskError(f"{self.name}: unknown option(s) {unknown}{hint}; known: {list(known)}")
        if self.options.get("eval_data") and not self.options.get("data"):
            raise TaskError(f"{self.name}: eval_data needs data as well")

    def max_new_tokens(self, override: int | None = None) -> int:
        """The completion length to generate: `override` when given, else the task's own default."""
        n = self.default_max_new_tokens if override is None else override
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TaskError(f"max_new_tokens must be a whole number >= 1, got {override!r}")
        return n

    # -- data -------------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> tuple[list[Example], list[Example]]:
        """Return (train, eval) lists; must be disjoint (use `disjoint_split`)."""

    def draw_distinct(
        self,
        stream: str,
        n: int,
        exclude: set[str],
        draw: Callable[[str, int], Example | None],
        max_attempts: int | None = None,
        what: str = "items",
    ) -> list[Example]:
        """`n` generated examples with distinct prompts, none in `exclude` (e.g. the eval split's).

        `draw(id, k)` makes the k-th candidate (None: no usable candidate this attempt); duplicates are
        drawn again, and a generator that cannot reach `n` distinct items is an error, never a
        silently short split.
        """
        out: list[Example] = []
        seen = set(exclude)
        limit = 50 * n + 1000 if max_attempts is None else max_attempts
        for _ in range(limit):
            if len(out) == n:
                return out
            ex = draw(f"{self.name}-{stream}-{len(out):05d}", len(out))
            if ex is not None and ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        if len(out) < n:
            raise TaskError(f"{self.name}: could not generate {n} distinct {what}")
        return out

    def split(self, split: Split) -> list[Example]:
        if self._splits is None:
            try:
                tr, ev = self.build()
            except Exception as exc:
                if isinstance(exc, EvotuneError) or not is_plugin(type(self)):
                    raise  # a built-in task's bug keeps its traceback
                raise plugin_error(f"task plug-in {type(self).__module__}:{type(self).__name__}: build()", exc) from exc
            for e in (*tr, *ev):  # every task, a plug-in's too: bad text never reaches a tokenizer
                if (problem := text_problem(e.prompt)) is not None:
                    raise TaskError(f"{self.name}: example {e.id!r:.80} cannot be a prompt: {problem}; fix the data")
            overlap = {e.prompt for e in tr} & {e.prompt for e in ev}
            if overlap:
                raise TaskError(f"{self.name}: {len(overlap)} prompts are in both train and eval splits")
            self._splits = (tr, ev)
        if split == "train":
            return self._splits[0]
        if split == "eval":
            return self._splits[1]
        raise TaskError(f"unknown split {split!r}; use 'train' or 'eval'")

    def batch(self, split: Split, size: int | None, seed: int, step: int) -> list[Example]:
        """A seeded mini-batch of the split (the whole split when `size` is None or too big)."""
        items = self.split(split)
        if not items:
            raise TaskError(
                f"task {self.name!r} has an empty {split} split (n_train={self.n_train}, n_eval={self.n_eval}); "
                "give it more distinct prompts or change --n-train/--n-eval"
            )
        if size is None or size >= len(items):
            return list(items)
        rng = random.Random(stable_int("batch", seed, step, self.name))
        return rng.sample(items, size)

    # -- prompting --------------------------------------------------------------------------
    def system_prompt(self) -> str | None:
        """Task default system prompt; `PromptStyle.system_prompt` overrides it."""
        return None

    def render(self, example: Example, tokenizer: Any) -> str:
        """Model input text for an example (chat template, system prompt, response prefix)."""
        style = self.prompt_style
        system = style.system_prompt if style.system_prompt is not None else self.system_prompt()
        if style.chat_template and getattr(tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": example.prompt}
            ]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = (system + "\n\n" if system else "") + example.prompt + "\n"
        return text + style.response_prefix

    # -- reward -----------------------------------------------------------------------------
    @abstractmethod
    def reward(self, completion: str, example: Example) -> Reward:
        """Score a completion (already decoded and stripped by `decode_completion`)."""

    def answer_error(self, answer: Any) -> str | None:
        """Why this task cannot grade `answer` (its type or shape), or None; tasks override it."""
        return None

    def score(self, completion: str, example: Example) -> Reward:
        """`reward` with the response prefix restored, and a clear error if the reward breaks."""
        problem = self.answer_error(example.answer)
        if problem:
            raise ExampleTypeError(f"task {self.name!r} cannot grade example {example.id!r}: {problem}")
        text = (
            self.prompt_style.response_prefix + completion
            if self.prompt_style.response_prefix
            else completion
        )
        try:
            with _time_limit(self.reward_timeout, f"reward of task {self.name!r} on example {example.id!r}"):
                r = self.reward(text, example)
        except TaskError:
            raise
        except Exception as exc:  # a user reward that raises must name itself, the item and where
            label = f"{type(self).__module__}:{type(self).__name__}" if is_plugin(type(self)) else self.name
            raise PluginError(
                f"reward of task {label!r} raised on example {example.id!r}: {describe(exc)} "
                f"(at {raised_at(exc)}); {DEBUG_HINT}"
            ) from exc
        if not isinstance(r, Reward):
            raise TaskError(f"reward of task {self.name!r} returned {type(r).__name__}, expected Reward")
        if isinstance(r.score, bool) or not isinstance(r.score, int | float):
            raise TaskError(
                f"reward of task {self.name!r} returned a {type(r.score).__name__} score {r.score!r} on "
                f"{example.id!r}; Reward.score must be a number"
            )
        if not math.isfinite(r.score) or abs(r.score) > MAX_SCORE:
            what = "non-finite score" if not math.isfinite(r.score) else "score"
            raise TaskError(
                f"reward of task {self.name!r} returned {what} {r.score} on {example.id!r}; scores must be finite "
                f"and within ±{MAX_SCORE:g} (rescale the reward)"
            )
        return r

    def score_batch(self, completions: Sequence[str], examples: Sequence[Example]) -> list[Reward]:
        """`score` for many completions at once (what every scoring path calls).

        The default scores one by one; a task whose reward is a remote model overrides it to send
        one batched request instead of one per completion.
        """
        if len(completions) != len(examples):
            raise TaskError(f"{len(completions)} completions for {len(examples)} examples")
        return [self.score(c, e) for c, e in zip(completions, examples, strict=True)]


def _time_limit(seconds: float, what: str) -> AbstractContextManager[None]:
    """Interrupt a hung reward (only possible in the main thread on Unix)."""
    return time_limit(seconds, lambda: RewardTimeout(f"{what} did not return within {seconds:g} s (hung reward function?)"))


# -- registry ---------------------------------------------------------------------------------
# Filled by `register_task` as the built-in modules load. Python runs `evotune/tasks/__init__.py`
# (which imports every built-in) before any of its submodules, this one included, so a lookup here
# always sees the built-ins without importing the package back (no circle).
_REGISTRY: dict[str, type[Task]] = {}
_PLUGIN_MODULES: set[str] = set()  # modules named by `--task module:Class`


def plugin_modules() -> set[str]:
    """Modules of user code: `--task module:Class` modules and those that registered a task outside evotune."""
    return _PLUGIN_MODULES | set(task_modules()) | {c.__module__ for c in _REGISTRY.values() if c.__module__ == "__main__"}


def is_plugin(cls: type) -> bool:
    return not cls.__module__.startswith("evotune.")


def plugin_error(what: str, exc: BaseException) -> PluginError:
    """One line for a plug-in's bug: which plug-in and hook, the exception, and the line that raised it."""
    where = raised_at(exc, plugin_modules()) or raised_at(exc)
    return PluginError(f"{what} raised {describe(exc)} (at {where}); {DEBUG_HINT}")


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a Task available by name (`--task NAME`)."""

    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def task_modules() -> list[str]:
    """Modules that registered tasks outside evotune: a worker process imports them to know the same names."""
    return sorted({c.__module__ for c in _REGISTRY.values()
                   if not c.__module__.startswith("evotune.") and c.__module__ != "__main__"})


def available_tasks() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by registered name, or `package.module:ClassName` for a user's own task."""
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), attr)
        except SyntaxError as exc:
            raise TaskError(f"cannot import task {name!r}: {exc.msg} in {exc.filename} line {exc.lineno}") from None
        except (ImportError, AttributeError) as exc:
            hint = ""
            local = Path.cwd() / (mod.replace(".", "/") + ".py")
            if isinstance(exc, ModuleNotFoundError) and local.is_file():
                hint = f" ({local.name} is in the current directory, which is not on the import path: run with PYTHONPATH=.)"
            raise TaskError(f"cannot import task {name!r}: {exc}{hint}") from None
        except Exception as exc:  # the module raised while being imported
            raise TaskError(f"cannot import task {name!r}: importing {mod} raised {exc!r}") from None
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TaskError(f"{name!r} is not a Task subclass")
        _PLUGIN_MODULES.add(mod)
        return _construct(cls, name, kwargs)
    if name not in _REGISTRY:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(sorted(_REGISTRY))} (or module:Class)")
    return _construct(_REGISTRY[name], name, kwargs)


def _construct(cls: type[Task], name: str, kwargs: dict[str, Any]) -> Task:
    """`cls(**kwargs)`; a plug-in that cannot be built (abstract, or its __init__ raises) is one line."""
    if not is_plugin(cls):
        return cls(**kwargs)
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        raise PluginError(f"task plug-in {name!r} ({cls.__module__}:{cls.__name__}) does not implement "
                          f"{', '.join(abstract)}; define {'them' if len(abstract) > 1 else 'it'} in the class")
    try:
        return cls(**kwargs)
    except EvotuneError:
        raise
    except Exception as exc:
        raise plugin_error(f"task plug-in {name!r}: {cls.__name__}(...)", exc) from exc
