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
