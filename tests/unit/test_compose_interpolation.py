"""Compose's variable substitution and .env files, as sealift resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealift.compose.interpolate import escape, interpolate, read_env_file
from sealift.errors import UsageError

ENV = {"SET": "value", "EMPTY": ""}


def expand(text: str, env: dict[str, str] = ENV) -> str:
    return interpolate(text, env.get, "test")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$SET and ${SET}", "value and value"),
        ("${UNSET}|$UNSET|", "||"),
        ("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", "value d d"),
        ("${SET-d} ${EMPTY-d} ${UNSET-d}", "value  d"),
        ("${SET:+r} ${EMPTY:+r} ${UNSET:+r}", "r  "),
        ("${SET+r} ${EMPTY+r} ${UNSET+r}", "r r "),
        ("${UNSET:-${SET}-x}", "value-x"),
        ("${UNSET:-a ${UNSET2:-b} c}", "a b c"),
        ("$$SET $${SET} $$$$", "$SET ${SET} $$"),
        ("${SET:-$$}", "value"),
        ("${UNSET:-$$}", "$"),
        ("no variables {}", "no variables {}"),
    ],
)
def test_templates_expand_as_compose_does(template: str, expected: str) -> None:
    assert expand(template) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?tell me}", "required variable UNSET is missing a value: tell me"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value"),
        ("${UNSET?no}", "required variable UNSET is missing a value: no"),
    ],
)
def test_a_required_variable_that_is_missing_is_an_error(template: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        expand(template)


def test_a_required_variable_that_is_set_or_empty_without_colon_passes() -> None:
    assert expand("${SET:?x} ${EMPTY?x}") == "value "


@pytest.mark.parametrize("template", ["$", "a $ b", "${", "${SET", "${1X}", "${SET:x}", "${}"])
def test_invalid_templates_are_refused(template: str) -> None:
    with pytest.raises(UsageError, match="invalid interpolation format"):
        expand(template)


@given(st.text())
def test_escaped_text_expands_back_to_itself(text: str) -> None:
    nothing: dict[str, str] = {}
    assert interpolate(escape(text), nothing.get, "test") == text


def test_env_files_read_quotes_comments_export_and_references(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n"
        "\n"
        "export TAG=2\n"
        "PLAIN=a b # trailing comment\n"
        "SINGLE='${TAG} stays'\n"
        'DOUBLE="tag ${TAG}\\nnext"\n'
        "FROM_PROCESS=${HOME_DIR:-none}\n"
        'MULTI="one\n'
        'two"\n'
        "EMPTY=\n"
    )
    values = read_env_file(env_file, {"HOME_DIR": "/home/me"})
    assert values == {
        "TAG": "2",
        "PLAIN": "a b",
        "SINGLE": "${TAG} stays",
        "DOUBLE": "tag 2\nnext",
        "FROM_PROCESS": "/home/me",
        "MULTI": "one\ntwo",
        "EMPTY": "",
    }


def test_a_missing_env_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"env file .* not found"):
        read_env_file(tmp_path / "nope.env", {})
