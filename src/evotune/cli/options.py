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
