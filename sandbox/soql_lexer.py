"""SOQL tokens, string literals and the CRM's error layout (caret under the offending token)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SoqlError", "Token", "decode_string", "malformed", "pointer", "tokenize"]


class SoqlError(Exception):
    """A query the CRM would refuse with HTTP 400 ``[{"errorCode": code, "message": ...}]``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- tokens ---------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
  | (?P<number>[+-]?\d+(?:\.\d+)?(?![\w.]))
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),:])
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True)
class Token:
    kind: str  # datetime, date, number, string, ident, op, punct, eof
    text: str
    pos: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.upper() in words


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise malformed(text, pos, f"unexpected token: '{text[pos:].split()[0][:20]}'")
        kind = match.lastgroup or "ws"
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


def pointer(text: str, pos: int) -> str:
    """The CRM's error layout: the query's line, a caret under the column, the position."""
    line_no = text.count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    column = pos - line_start + 1
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{line_no}:Column:{column}\n"


def malformed(text: str, pos: int, detail: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", pointer(text, pos) + detail)


def decode_string(raw: str) -> tuple[str, str]:
    """Decode a quoted literal; return (value, LIKE regex) (``\\%``/``\\_`` stay literal in LIKE)."""
    value: list[str] = []
    pattern: list[str] = []
    index, body = 0, raw[1:-1]
    while index < len(body):
        char = body[index]
        if char == "\\":
            index += 1
            escaped = body[index]
            if escaped in "%_":
                value.append(escaped)
                pattern.append(re.escape(escaped))
            elif escaped == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[index + 1 : index + 5]):
                decoded = chr(int(body[index + 1 : index + 5], 16))
                value.append(decoded)
                pattern.append(re.escape(decoded))
                index += 4
            elif escaped.lower() in _ESCAPES:
                decoded = _ESCAPES[escaped.lower()] if escaped not in "\"'\\" else escaped
                value.append(decoded)
                pattern.append(re.escape(decoded))
            else:
                raise ValueError(f"Invalid string literal: {raw}")
        else:
            value.append(char)
            pattern.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return "".join(value), "".join(pattern)
