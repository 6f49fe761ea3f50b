"""The one atomic-write helper (forecast.files): readers never see a half-written file or folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from forecast.files import atomic_write, file_sha256, leftovers, write_atomic


def test_an_error_while_writing_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = write_atomic(tmp_path / "skill.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skill.json"]


def test_a_folder_replaces_the_old_folder_whole(tmp_path):
    target = tmp_path / "nature.zarr"
    for content in ("first", "second"):
        with atomic_write(target) as tmp:
            tmp.mkdir()
            (tmp / content).write_text(content)
    assert [p.name for p in target.iterdir()] == ["second"] and leftovers(target) == []


def test_without_replace_the_first_writer_wins(tmp_path):
    target = tmp_path / "store.zarr"
    for content in ("first", "second"):
        with atomic_write(target, replace=False) as tmp:
            tmp.mkdir()
            (tmp / content).write_text(content)
    assert [p.name for p in target.iterdir()] == ["first"] and leftovers(target) == []


def test_temporary_names_are_per_file_not_per_stem(tmp_path):
    # the old skill writer used path.with_suffix('.tmp'): skill.json and skill.yaml shared 'skill.tmp'
    with atomic_write(tmp_path / "skill.json") as a, atomic_write(tmp_path / "skill.yaml") as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_text("json")
        b.write_text("yaml")
    assert (tmp_path / "skill.json").read_text() == "json" and (tmp_path / "skill.yaml").read_text() == "yaml"


def test_an_interrupted_write_is_found_as_a_leftover(tmp_path):
    target = tmp_path / "scores.nc"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_text("x")
            stray = tmp.with_name(tmp.name.replace(".partial", "x.partial"))
            stray.write_text("left by a killed process")
            raise KeyboardInterrupt
    assert leftovers(target) == [stray] and not target.exists()


def test_write_atomic_sets_the_mode(tmp_path):
    path = write_atomic(tmp_path / "status.json", b"{}", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600


def test_file_digest_matches_hashlib_on_the_whole_bytes(tmp_path):
    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_the_rename_syncs_the_folder_entry_not_the_other_writers_beside_it(tmp_path, monkeypatch):
    """Ranks create one store each in their own temporary folder beside it; a rank that renamed its folder
    into place synced the whole parent tree, walking into another rank's folder while zarr renamed its
    temporary files there (FileNotFoundError). Only the writer's own tree and the parent folder's entry
    are synced."""
    other = tmp_path / ".ensemble.zarr.0123456789ab.partial"
    (other / "manifest").mkdir(parents=True)
    (other / "manifest" / "zarr.json").write_text("{}")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *args, **kwargs: (opened.append(Path(path)), real_open(path, *args, **kwargs))[1])
    with atomic_write(tmp_path / "ensemble.zarr", replace=False) as tmp:
        (tmp / "manifest").mkdir(parents=True)
        (tmp / "manifest" / "zarr.json").write_text("{}")
    assert (tmp_path / "ensemble.zarr" / "manifest" / "zarr.json").is_file()
    assert [p for p in opened if p == other or other in p.parents] == []
    assert tmp_path in opened and any(p.name == "zarr.json" for p in opened)  # own files and the parent's entry
