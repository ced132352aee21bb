"""Atomic writes: the target keeps its old content or gets the complete new content, never a
partial file, and no temporary file is left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from compressor.utils.io import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text


class Interrupted(Exception):
    pass


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_write_publishes_the_file_only_at_the_end(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as temporary:
        assert temporary.parent == target.parent  # same folder: the rename is atomic
        assert temporary != target and temporary.name.startswith(".out.bin.")
        temporary.write_bytes(b"complete")
        assert not target.exists()
    assert target.read_bytes() == b"complete"
    assert leftovers(tmp_path, {"out.bin"}) == []


@pytest.mark.parametrize("error", [Interrupted("disk full"), KeyboardInterrupt()])
def test_failure_midway_leaves_no_file(tmp_path, error):
    target = tmp_path / "out.bin"
    with pytest.raises(type(error)), atomic_write(target) as temporary, temporary.open("wb") as handle:
        handle.write(b"half of the")
        raise error
    assert not target.exists()
    assert leftovers(tmp_path, set()) == []


def test_failure_midway_keeps_the_old_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Interrupted), atomic_write(target) as temporary:
        temporary.write_text("new but incomp")
        raise Interrupted
    assert target.read_text() == "old"
    assert leftovers(tmp_path, {"out.txt"}) == []


def test_overwrite_replaces_the_file_in_one_step(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old content")
    reader = target.open()  # a reader of the old file is not affected by the write
    try:
        with atomic_write(target) as temporary:
            temporary.write_text("new content")
            assert target.read_text() == "old content"  # never truncated or half written
        assert target.read_text() == "new content"
        assert reader.read() == "old content"
    finally:
        reader.close()
    assert leftovers(tmp_path, {"out.txt"}) == []


def test_overwrite_uses_a_rename_not_a_copy(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")
    calls = []
    original = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (calls.append((Path(src), Path(dst))),
                                                        original(src, dst))[1])
    with atomic_write(target) as temporary:
        temporary.write_text("new")
    assert calls == [(temporary, target)]


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "metrics.json"
    assert atomic_write_json(target, {"x": 1}) == target
    assert json.loads(target.read_text()) == {"x": 1}


def test_atomic_write_text_round_trips_unicode(tmp_path):
    target = tmp_path / "report.md"
    assert atomic_write_text(target, "accuracy ≥ 0.9 – ok\n") == target
    assert target.read_text(encoding="utf-8") == "accuracy ≥ 0.9 – ok\n"


def test_atomic_write_text_failing_writer_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    target.write_text("old report")

    def failing_write(self, text, encoding=None):
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[:3])
        raise OSError("no space left on device")

    monkeypatch.setattr(Path, "write_text", failing_write)
    with pytest.raises(OSError, match="no space"):
        atomic_write_text(target, "a much longer new report")
    monkeypatch.undo()
    assert target.read_text() == "old report"
    assert leftovers(tmp_path, {"report.md"}) == []


def test_atomic_write_json_format(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2], "path": Path("x/y")})
    text = target.read_text()
    assert text.endswith("}\n") and '\n  "b": 1' in text  # indented, keys in insertion order
    assert text.index('"b"') < text.index('"a"')
    assert json.loads(text) == {"b": 1, "a": [1, 2], "path": "x/y"}  # unknown types as str


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}\n')
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular"):
        atomic_write_json(target, circular)
    assert json.loads(target.read_text()) == {"old": True}
    assert leftovers(tmp_path, {"metrics.json"}) == []


def test_atomic_torch_save_round_trips(tmp_path):
    target = tmp_path / "weights.pt"
    state = {"w": torch.randn(3, 4), "b": torch.arange(3)}
    assert atomic_torch_save(state, target) == target
    loaded = torch.load(target, weights_only=True)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


class Unpicklable:
    def __reduce__(self):
        raise Interrupted("cannot pickle this")


def test_torch_save_failing_midway_keeps_the_old_checkpoint(tmp_path):
    target = tmp_path / "weights.pt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    before = target.read_bytes()
    # pickling fails while the checkpoint is being written
    with pytest.raises(Interrupted):
        atomic_torch_save({"big": torch.randn(256, 256), "bad": Unpicklable()}, target)
    assert target.read_bytes() == before
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert leftovers(tmp_path, {"weights.pt"}) == []


def test_atomic_files_get_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "atomic.txt"
    atomic_write_text(target, "x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
