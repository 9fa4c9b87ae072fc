"""Variable substitution as compose does it, and the ``.env`` files that feed it.

Templates: ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}``, ``${VAR+other}``, and ``$$`` for a literal
``$``. Defaults may hold templates of their own; they are expanded only when used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from sealift.errors import UsageError

_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")

Lookup = Callable[[str], str | None]


def interpolate(text: str, lookup: Lookup, where: str) -> str:
    """``text`` with every variable replaced; an invalid template or a required variable that is
    missing raises UsageError naming ``where``."""
    result, end = _expand(text, 0, lookup, where, inside_braces=False)
    assert end == len(text)
    return result


def _expand(
    text: str, pos: int, lookup: Lookup, where: str, *, inside_braces: bool
) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "}" and inside_braces:
            return "".join(out), pos
        if char != "$":
            out.append(char)
            pos += 1
            continue
        following = text[pos + 1 : pos + 2]
        if following == "$":
            out.append("$")
            pos += 2
        elif following == "{":
            value, pos = _braced(text, pos + 2, lookup, where)
            out.append(value)
        elif name := _NAME.match(text, pos + 1):
            out.append(lookup(name.group()) or "")
            pos = name.end()
        else:
            raise _invalid(text, where)
    if inside_braces:
        raise _invalid(text, where)
    return "".join(out), pos


def _braced(text: str, pos: int, lookup: Lookup, where: str) -> tuple[str, int]:
    """The value of ``${...}`` whose name starts at ``pos``, and the position after its ``}``."""
    name_match = _NAME.match(text, pos)
    if name_match is None:
        raise _invalid(text, where)
    name, pos = name_match.group(), name_match.end()
    if text.startswith("}", pos):
        return lookup(name) or "", pos + 1
    operator = next((op for op in _OPERATORS if text.startswith(op, pos)), None)
    if operator is None:
        raise _invalid(text, where)
    word_start = pos + len(operator)
    word_end = _closing_brace(text, word_start, where)
    value = lookup(name)
    unset_counts = ":" in operator
    missing = value is None or (unset_counts and value == "")

    def word() -> str:
        expanded, _ = _expand(text, word_start, lookup, where, inside_braces=True)
        return expanded

    if operator in (":-", "-"):
        result = word() if missing else value or ""
    elif operator in (":+", "+"):
        result = "" if missing else word()
    elif missing:
        detail = word()
        raise UsageError(
            f"{where}: required variable {name} is missing a value"
            + (f": {detail}" if detail else "")
        )
    else:
        result = value or ""
    return result, word_end + 1


def _closing_brace(text: str, pos: int, where: str) -> int:
    depth = 0
    while pos < len(text):
        if text.startswith("$$", pos):
            pos += 2
            continue
        if text.startswith("${", pos):
            depth += 1
            pos += 2
            continue
        if text[pos] == "}":
            if depth == 0:
                return pos
            depth -= 1
        pos += 1
    raise _invalid(text, where)


def _invalid(text: str, where: str) -> UsageError:
    return UsageError(f'{where}: invalid interpolation format "{text}"')


def escape(text: str) -> str:
    """The template that interpolates back to ``text``."""
    return text.replace("$", "$$")


def read_env_file(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a ``.env`` file sets, as compose reads it.

    ``KEY=value`` lines (``export`` allowed); ``#`` comments; single quotes are literal; double
    quotes take ``\\n``-style escapes; unquoted and double-quoted values are interpolated with
    the variables set earlier in the file, then ``environ``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"env file {path} not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read env file {path}: {exc}") from exc
    found: dict[str, str] = {}

    def lookup(name: str) -> str | None:
        return found.get(name, environ.get(name))

    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, equals, rest = line.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key) and not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise UsageError(f"{path}:{index}: invalid line {lines[index - 1]!r}")
        if not equals:
            if key in environ:
                found[key] = environ[key]
            continue
        value, index = _env_value(rest.lstrip(), lines, index, lookup, f"{path}:{index}")
        found[key] = value
    return found


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$$"}


def _env_value(
    rest: str, lines: list[str], index: int, lookup: Lookup, where: str
) -> tuple[str, int]:
    if rest.startswith("'"):
        body, index = _quoted(rest[1:], "'", lines, index, where)
        return body, index
    if rest.startswith('"'):
        body, index = _quoted(rest[1:], '"', lines, index, where)
        unescaped = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body)
        return interpolate(unescaped, lookup, where), index
    value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
    return interpolate(value, lookup, where), index


def _quoted(start: str, quote: str, lines: list[str], index: int, where: str) -> tuple[str, int]:
    """The body of a quoted value that may continue over following lines."""
    text = start
    while True:
        end = _unescaped(text, quote)
        if end >= 0:
            return text[:end], index
        if index >= len(lines):
            raise UsageError(f"{where}: unterminated {quote} quote")
        text += "\n" + lines[index]
        index += 1


def _unescaped(text: str, quote: str) -> int:
    pos = 0
    while pos < len(text):
        if text[pos] == "\\" and quote == '"':
            pos += 2
            continue
        if text[pos] == quote:
            return pos
        pos += 1
    return -1
