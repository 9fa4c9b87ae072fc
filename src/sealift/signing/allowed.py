"""OpenSSH's allowed_signers file (ssh-keygen(1), ALLOWED SIGNERS): who may sign, with what key.

Each line is ``PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]``. PRINCIPALS is a pattern list
(``*`` and ``?`` wildcards, ``!`` negation, comma separated, optionally double-quoted); OPTIONS
are ``namespaces="..."`` (a pattern list), ``valid-after="..."``, ``valid-before="..."``
(``YYYYMMDD[Z]`` or ``YYYYMMDDHHMM[SS][Z]``, local time unless ``Z``) and ``cert-authority``,
which sealift does not support: such lines never match, and the error says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sealift.signing.keys import PublicKey
from sealift.signing.wire import SignatureError

_KEY_TYPE = re.compile(r"(ssh-|ecdsa-|sk-)\S+")
_TIME = re.compile(r"(\d{8})(\d{4}(\d{2})?)?(Z?)", re.IGNORECASE)
_OPTIONS = ("cert-authority", "namespaces", "valid-after", "valid-before")


@dataclass(frozen=True)
class AllowedSigner:
    principals: str
    key: PublicKey
    line: int
    namespaces: str | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    cert_authority: bool = False


def read_allowed_signers(path: Path) -> list[AllowedSigner]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError as exc:
        raise SignatureError(f"no such allowed signers file: {path}") from exc
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_allowed_signers(text, str(path))


def parse_allowed_signers(text: str, where: str) -> list[AllowedSigner]:
    signers = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            signers.append(_parse_line(line, number, f"{where} line {number}"))
    return signers


def _parse_line(line: str, number: int, what: str) -> AllowedSigner:
    principals, rest = _token(line, what)
    if not principals:
        raise SignatureError(f"{what}: no principals")
    options: dict[str, str | None] = {}
    if not _KEY_TYPE.match(rest):
        text, rest = _token(rest, what)
        options = _parse_options(text, what)
    key = PublicKey.from_line(rest, what)
    return AllowedSigner(
        principals,
        key,
        number,
        namespaces=options.get("namespaces"),
        valid_after=_time(options.get("valid-after"), what),
        valid_before=_time(options.get("valid-before"), what),
        cert_authority="cert-authority" in options,
    )


def _token(text: str, what: str) -> tuple[str, str]:
    """The first whitespace-delimited token (quotes may hold spaces), without a pair of outer
    quotes, and the rest of the line."""
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            token = text[:index]
            return _unquote(token), text[index:].strip()
    if quoted:
        raise SignatureError(f"{what}: unterminated quote")
    return _unquote(text), ""


def _unquote(token: str) -> str:
    return token[1:-1] if len(token) >= 2 and token[0] == token[-1] == '"' else token


def _parse_options(text: str, what: str) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', text):
        name, has_value, value = item.partition("=")
        name = name.lower()
        if name not in _OPTIONS:
            raise SignatureError(f"{what}: unknown option {name!r}")
        if name in options:
            raise SignatureError(f"{what}: option {name!r} given twice")
        if (name == "cert-authority") == bool(has_value):
            raise SignatureError(f"{what}: malformed option {item!r}")
        options[name] = _unquote(value) if has_value else None
    return options


def _time(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        raise SignatureError(f"{what}: invalid time {text!r} (YYYYMMDD[HHMM[SS]][Z])")
    date, clock, _, zulu = match.groups()
    digits = date + (clock or "0000")
    digits += "00" if len(digits) == 12 else ""
    try:
        moment = datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise SignatureError(f"{what}: invalid time {text!r}") from exc
    return moment.replace(tzinfo=UTC) if zulu else moment.astimezone()


def match_pattern_list(value: str, patterns: str) -> bool:
    """OpenSSH's pattern lists: true when a pattern matches and no ``!pattern`` does."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _wildcard(pattern[1:] if negated else pattern).fullmatch(value):
            if negated:
                return False
            matched = True
    return matched


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def find_signer(
    signers: list[AllowedSigner],
    key: PublicKey,
    namespace: str,
    where: str,
    *,
    identity: str | None = None,
    now: datetime | None = None,
) -> AllowedSigner:
    """The allowed_signers line that lets ``key`` sign in ``namespace`` now (as ``identity``,
    when given); otherwise one SignatureError that says why not."""
    moment = now or datetime.now(UTC)
    lines = [s for s in signers if s.key == key and not s.cert_authority]
    if not lines:
        authorities = any(s.cert_authority for s in signers)
        note = " (its cert-authority lines are not supported by sealift)" if authorities else ""
        raise SignatureError(f"signed by {key}, which {where} does not list{note}")
    if identity is not None:
        lines = [s for s in lines if match_pattern_list(identity, s.principals)]
        if not lines:
            raise SignatureError(f"{where} does not allow {key} to sign as {identity}")
    reasons = []
    for line in lines:
        reason = _refusal(line, namespace, moment)
        if reason is None:
            return line
        reasons.append(f"line {line.line} {reason}")
    raise SignatureError(f"{where} does not allow {key} now: {'; '.join(reasons)}")


def _refusal(line: AllowedSigner, namespace: str, moment: datetime) -> str | None:
    if line.namespaces is not None and not match_pattern_list(namespace, line.namespaces):
        return f'allows only namespaces="{line.namespaces}", not {namespace!r}'
    if line.valid_after is not None and moment < line.valid_after:
        return f"is valid only from {line.valid_after:%Y-%m-%d %H:%M:%S %Z}"
    if line.valid_before is not None and moment > line.valid_before:
        return f"expired {line.valid_before:%Y-%m-%d %H:%M:%S %Z}"
    return None
