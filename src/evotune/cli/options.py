"""Option groups: flags declared once, in a table, and added to every command that shares them.

typer reads a command's signature, so `add_options` appends the table's parameters to it and hands
the command their parsed values as one object. A group of flags (the run flags of every trainer,
a sweep's base-run flags, the ES noise flags) is then written once, not once per command.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any

# name, type, typer option, default (REQUIRED: the flag must be given)
Flag = tuple[str, Any, Any, Any]
REQUIRED = inspect.Parameter.empty


def add_options(flags: Sequence[Flag], into: str, collect: Callable[[dict[str, Any]], Any] = dict) -> Callable[
        [Callable[..., Any]], Callable[..., Any]]:
    """Give a command the `flags`; it receives `collect({name: value})` as its keyword `into`."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != into]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                   annotation=Annotated[tp, opt]) for name, tp, opt, default in flags]

        @functools.wraps(fn)
        def wrapper(**kw: Any) -> Any:
            values = {name: kw.pop(name) for name, *_ in flags}
            return fn(**kw, **{into: collect(values)})

        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        return wrapper

    return decorate


class FieldDefault:
    """A flag's default, read from the config model that owns it (pydantic model or dataclass).

    typer calls it when the command runs and prints it (`str`) in the command's `--help`, so the
    default is written once, in the model, and the model's module (pydantic, fastapi, ...) is only
    imported by the command that needs it, never by `evotune --help`. Use it as
    `Opt(default_factory=FieldDefault("module:Model", "field"))`.
    """

    def __init__(self, model: str, name: str) -> None:
        self.model, self.name = model, name

    def __call__(self) -> Any:
        import dataclasses
        import importlib

        module, _, cls_name = self.model.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        if dataclasses.is_dataclass(cls):
            return next(f.default for f in dataclasses.fields(cls) if f.name == self.name)
        return cls.model_fields[self.name].default

    def __str__(self) -> str:
        return str(self())
