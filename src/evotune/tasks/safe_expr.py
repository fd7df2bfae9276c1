"""A small, bounded arithmetic evaluator for untrusted model output.

Countdown answers are model text; the public reference code runs them through Python's
evaluator, which lets a completion import modules or hang the trainer (`9**9**9`). This module
accepts only non-negative integer literals, `+ - * /` (also `× ÷ −`) and parentheses, computes
with exact `Fraction`s, and bounds length, token count, nesting depth, literal size and value
size, so every input either yields an `ExprResult` or raises `ExprError` quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

MAX_LENGTH = 200
MAX_TOKENS = 100
MAX_DEPTH = 50
MAX_DIGITS = 6
# Bit length cap on numerator/denominator: unreachable by legal inputs within the limits above,
# it is a second line of defence should the limits be raised by a caller.
MAX_BITS = 4096

_OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", "×": "*", "÷": "/", "−": "-", "(": "(", ")": ")"}
_DIGITS = frozenset("0123456789")


class ExprError(ValueError):
    """The text is not a valid, bounded arithmetic expression (or divides by zero)."""


@dataclass(frozen=True)
class ExprResult:
    """Exact value of an expression and its integer literals in order of appearance."""

    value: Fraction
    numbers: tuple[int, ...]


Token = tuple[str, int]  # ("num", value) or (operator, 0)


def tokenize(
    text: str, *, max_length: int = MAX_LENGTH, max_tokens: int = MAX_TOKENS, max_digits: int = MAX_DIGITS
) -> list[Token]:
    """Split `text` into number and operator tokens; anything else (letters, `.`, `^`) is an error."""
    if not isinstance(text, str):
        raise ExprError(f"expected a string, got {type(text).__name__}")
    if len(text) > max_length:
        raise ExprError(f"expression longer than {max_length} characters")
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j - i > max_digits:
                raise ExprError(f"number with more than {max_digits} digits")
            tokens.append(("num", int(text[i:j])))
            i = j
        elif c in _OPERATORS:
            tokens.append((_OPERATORS[c], 0))
            i += 1
        elif c.isspace():
            i += 1
            continue
        else:
            raise ExprError(f"invalid character {c!r} at position {i}")
        if len(tokens) > max_tokens:
            raise ExprError(f"more than {max_tokens} tokens")
    if not tokens:
        raise ExprError("empty expression")
    return tokens


class _Parser:
    """Recursive descent: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*."""

    def __init__(self, tokens: list[Token], allow_unary_minus: bool, max_depth: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.allow_unary_minus = allow_unary_minus
        self.max_depth = max_depth
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def parse(self) -> Fraction:
        value = self.expr(0)
        if self.pos != len(self.tokens):
            raise ExprError(f"unexpected {self.peek()!r} after a complete expression")
        return value

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos][0]
            self.pos += 1
            rhs = self.term(depth)
            value = _check(value + rhs if op == "+" else value - rhs)
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos][0]
            self.pos += 1
            rhs = self.factor(depth)
            if op == "*":
                value = _check(value * rhs)
            else:
                if rhs == 0:
                    raise ExprError("division by zero")
                value = _check(value / rhs)
        return value

    def factor(self, depth: int) -> Fraction:
        if depth > self.max_depth:
            raise ExprError(f"nesting deeper than {self.max_depth}")
        tok = self.peek()
        if tok is None:
            raise ExprError("expression ends where a number was expected")
        if tok == "num":
            value = self.tokens[self.pos][1]
            self.pos += 1
            self.numbers.append(value)
            return Fraction(value)
        if tok == "(":
            self.pos += 1
            value = self.expr(depth + 1)
            if self.peek() != ")":
                raise ExprError("unbalanced parentheses")
            self.pos += 1
            return value
        if tok == "-":
            if not self.allow_unary_minus:
                raise ExprError("unary minus is not allowed")
            self.pos += 1
            return -self.factor(depth + 1)
        raise ExprError(f"unexpected {tok!r} where a number was expected")


def _check(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise ExprError("intermediate value too large")
    return value


def evaluate_expr(
    text: str,
    *,
    allow_unary_minus: bool = False,
    max_length: int = MAX_LENGTH,
    max_tokens: int = MAX_TOKENS,
    max_depth: int = MAX_DEPTH,
    max_digits: int = MAX_DIGITS,
) -> ExprResult:
    """Exact value of an arithmetic expression; raises `ExprError` for anything else.

    Unary minus is rejected by default because Countdown forbids it (it would let a model
    negate a number instead of combining the given ones).
    """
    tokens = tokenize(text, max_length=max_length, max_tokens=max_tokens, max_digits=max_digits)
    parser = _Parser(tokens, allow_unary_minus, max_depth)
    value = parser.parse()
    return ExprResult(value=value, numbers=tuple(parser.numbers))


# -- the reference reward's evaluator ----------------------------------------------------------------
#
# The public countdown code filters an answer to the characters `0-9 + - * / ( )` and space, then hands
# it to Python's evaluator. `python_value` computes what that evaluator returns for such text, with
# Python's own int/float arithmetic, but without ever running model output as code: it tokenizes and
# parses the text itself, following CPython's grammar for these characters (unary signs, `00`, leading
# zeros refused, redundant parentheses, `2(3)` a call, `()` a tuple). Two departures, both refusals:
# `**` and `//` are not arithmetic over + − × ÷ (and `9**9**9` would never finish), and nesting beyond
# bounds where CPython accepts every input (its own limits vary by version) is refused.
PY_CHARS = frozenset("0123456789+-*/() ")
PY_MAX_PARENS = 100  # CPython 3.11 refuses 201 open parentheses; with long unary chains, fewer
PY_MAX_SIGNS = 1000  # CPython 3.11 compiles ~2990 nested operators; version dependent
PY_MAX_NUMBERS = 100
PY_MAX_DIGITS = 4300  # CPython's default limit for int <-> str conversion

_PY_OPS = ("**", "//", "*", "/", "+", "-", "(", ")")


def _py_tokens(text: str) -> list[tuple[str, int]]:
    tokens: list[tuple[str, int]] = []
    i, n = 0, len(text)
    numbers = 0
    while i < n:
        c = text[i]
        if c == " ":
            i += 1
        elif c in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            lit = text[i:j]
            if len(lit) > PY_MAX_DIGITS:
                raise ExprError(f"number with more than {PY_MAX_DIGITS} digits")
            if lit[0] == "0" and lit.strip("0"):
                raise ExprError("leading zeros in a number (Python refuses them)")
            numbers += 1
            if numbers > PY_MAX_NUMBERS:
                raise ExprError(f"more than {PY_MAX_NUMBERS} numbers")
            tokens.append(("num", int(lit)))
            i = j
        else:
            op = next((o for o in _PY_OPS if text.startswith(o, i)), None)
            if op is None:
                raise ExprError(f"invalid character {c!r} at position {i}")
            if op in ("**", "//"):
                raise ExprError(f"{op!r} is not arithmetic over + - * /")
            tokens.append((op, 0))
            i += len(op)
    if not tokens:
        raise ExprError("empty expression")
    return tokens


def _py_apply(op: str, a: int | float, b: int | float) -> int | float:
    """`a op b` with Python's semantics; its arithmetic errors become `ExprError`."""
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        return a * b if op == "*" else a / b
    except (ZeroDivisionError, OverflowError) as exc:
        raise ExprError(str(exc)) from exc


class _PyParser:
    """CPython's grammar restricted to numbers, + - * / and parentheses; values are Python's own."""

    def __init__(self, tokens: list[tuple[str, int]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.signs = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def expr(self, parens: int) -> int | float:
        value = self.term(parens)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos][0]
            self.pos += 1
            rhs = self.term(parens)
            value = _py_apply(op, value, rhs)
        return value

    def term(self, parens: int) -> int | float:
        value = self.factor(parens)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos][0]
            self.pos += 1
            rhs = self.factor(parens)
            value = _py_apply(op, value, rhs)
        return value

    def factor(self, parens: int) -> int | float:
        negate = False
        while self.peek() in ("+", "-"):  # a chain of unary signs, iteratively
            negate ^= self.tokens[self.pos][0] == "-"
            self.pos += 1
            self.signs += 1
            if self.signs > PY_MAX_SIGNS:
                raise ExprError(f"more than {PY_MAX_SIGNS} unary signs")
        value = self.primary(parens)
        return -value if negate else value

    def primary(self, parens: int) -> int | float:
        tok = self.peek()
        if tok == "num":
            value: int | float = self.tokens[self.pos][1]
            self.pos += 1
        elif tok == "(":
            if parens >= PY_MAX_PARENS:
                raise ExprError(f"parentheses nested deeper than {PY_MAX_PARENS}")
            self.pos += 1
            if self.peek() == ")":
                raise ExprError("'()' is an empty tuple, not a number")
            value = self.expr(parens + 1)
            if self.peek() != ")":
                raise ExprError("unbalanced parentheses")
            self.pos += 1
        else:
            raise ExprError(f"unexpected {tok!r} where a number was expected")
        if self.peek() == "(":
            raise ExprError("a number followed by '(' is a call in Python, which fails")
        return value


def python_value(text: str) -> int | float:
    """What Python's evaluator returns for `text` over digits, `+ - * / ( )` and spaces.

    Raises `ExprError` wherever that evaluator raises (bad syntax, division by zero, overflow, a
    call or a tuple), and for `**`, `//` and the nesting bounds above. A single trailing newline is
    allowed, as the reference's character filter allows it and the evaluator ignores it.
    """
    if not isinstance(text, str):
        raise ExprError(f"expected a string, got {type(text).__name__}")
    body = text[:-1] if text.endswith("\n") else text
    tokens = _py_tokens(body)
    parser = _PyParser(tokens)
    value = parser.expr(0)
    if parser.pos != len(tokens):
        raise ExprError(f"unexpected {parser.peek()!r} after a complete expression")
    return value
