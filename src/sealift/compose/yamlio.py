"""YAML as compose reads it (YAML 1.2's core schema) and written so both composes read it back.

PyYAML follows YAML 1.1, where ``y``, ``on``, ``no``, ``010`` and ``2024-01-02`` are not strings;
compose (Go's yaml.v3) reads them as strings. The loader here resolves plain scalars the 1.2 way.
The dumper's 1.1 resolver quotes every string 1.1 would misread, so the output means the same to
compose v2 (yaml.v3) and compose v1 (PyYAML).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sealift.errors import UsageError

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_REPLACED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_DROPPED = _REPLACED | {"tag:yaml.org,2002:timestamp"}


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load(text: str | bytes, where: str) -> Any:
    """One YAML document, read as compose reads it; a syntax error names ``where``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise UsageError(f"{where} is not valid YAML: {detail}") from exc


def dump(document: Any) -> str:
    """Block-style YAML with sorted keys, as ``docker compose config`` prints it."""
    return yaml.dump(
        document,
        Dumper=yaml.SafeDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,
        indent=2,
    )
