"""What a load sends: the engine's layer stacks decide which layers can be left out."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from sealift.digest import Digest
from sealift.ends.engine import chain_ids, layers_in_chains
from sealift.ends.memory import image_from_layers


def digest(text: str) -> Digest:
    return Digest("sha256", hashlib.sha256(text.encode()).hexdigest())


def test_chain_ids_follow_the_oci_definition() -> None:
    a, b = digest("a"), digest("b")
    expected = Digest("sha256", hashlib.sha256(f"{a} {b}".encode()).hexdigest())
    assert chain_ids([a, b]) == [a, expected]


@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=6))
def test_a_chain_depends_on_every_layer_below_it(names: list[str]) -> None:
    diff_ids = [digest(n) for n in names]
    chains = chain_ids(diff_ids)
    assert len(chains) == len(diff_ids)
    assert chains[0] == diff_ids[0]
    changed = chain_ids([digest("other"), *diff_ids[1:]])
    if names[0] != "other":
        assert all(x != y for x, y in zip(chains, changed, strict=True))


layer_contents = st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=5)


@given(have=layer_contents, want=layer_contents)
def test_only_layers_whose_whole_stack_the_engine_has_are_skipped(
    have: list[bytes], want: list[bytes]
) -> None:
    engine_chains = set(chain_ids([image_from_layers([d]).target.layers[0].diff_id for d in have]))  # type: ignore[union-attr]
    entry = image_from_layers(want)
    skipped = layers_in_chains([entry], engine_chains)
    wanted = [layer.diff_id for layer in entry.target.layers]  # type: ignore[union-attr]
    prefix = 0
    for mine, theirs in zip(want, have, strict=False):
        if mine != theirs:
            break
        prefix += 1
    expected = {layer.digest for layer in entry.target.layers[:prefix]}  # type: ignore[union-attr]
    # a layer repeated above the shared prefix must still be sent
    expected -= {layer.digest for layer in entry.target.layers[prefix:]}  # type: ignore[union-attr]
    assert skipped == expected
    assert len(wanted) == len(want)


def test_an_engine_without_layers_gets_everything() -> None:
    entry = image_from_layers([b"one", b"two"])
    assert layers_in_chains([entry], set()) == set()
