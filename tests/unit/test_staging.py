"""One staging directory shared by receivers at once (two pushes into one machine)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sealift import compression
from sealift.remote.protocol import ProtocolError
from sealift.remote.staging import Staging
from tests.unit.test_protocol import _layer, _payload, _receive, _wire


def test_two_receivers_of_one_layer_both_succeed_and_append_it_once(tmp_path: Path) -> None:
    data = _payload()
    layer = _layer(data)
    wire = _wire(layer, 0, compression.ZSTD)
    appended: list[int] = []
    errors: list[BaseException] = []

    def receive() -> None:
        with Staging(tmp_path) as staging:
            try:
                staging.hold(layer.diff_id)
                appended.append(_receive(staging, wire))
                assert staging.hold(layer.diff_id)
                with staging.open(layer.diff_id) as stored:
                    assert stored.read() == data
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=receive) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(appended) == [0, len(data)]


def test_a_layer_another_receiver_holds_outlives_a_discard(tmp_path: Path) -> None:
    data = _payload()
    layer = _layer(data)
    with Staging(tmp_path) as first, Staging(tmp_path) as second:
        _receive(first, _wire(layer, 0, compression.NONE))
        assert second.hold(layer.diff_id)
        first.discard([layer.diff_id])
        assert second.complete_path(layer.diff_id).read_bytes() == data
        second.discard([layer.diff_id])
    assert not list(tmp_path.iterdir()), "the last user removes the layer and its lease"


def test_a_late_receiver_appends_only_what_is_still_missing(tmp_path: Path) -> None:
    data = _payload()
    layer = _layer(data)
    with Staging(tmp_path) as first, Staging(tmp_path) as second:
        full = _wire(layer, 0, compression.ZSTD)
        with pytest.raises(ProtocolError):
            _receive(first, full[: len(full) // 2])
        # the second receiver was told offset 0, but the first left bytes behind meanwhile
        left = first.offset(layer.diff_id)
        assert 0 < left < len(data)
        assert _receive(second, full) == len(data) - left
        assert second.complete_path(layer.diff_id).read_bytes() == data
