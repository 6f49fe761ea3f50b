"""The scored marker: written last, naming every file of the score output."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecast.errors import StoreError
from workflows.completeness import clear_scored, is_scored, mark_scored


def test_an_output_folder_given_relative_to_the_working_directory_is_marked_scored(tmp_path, monkeypatch):
    # `forecast demo` scores into demo-output/scores: the files listed from it are relative paths
    monkeypatch.chdir(tmp_path)
    out = Path("demo-output") / "scores"
    out.mkdir(parents=True)
    for name in ("scores.nc", "report.md"):
        (out / name).write_text(name)
    mark_scored(out, list(out.iterdir()))
    assert is_scored(out)
    (out / "report.md").unlink()
    assert not is_scored(out)  # a listed file gone: not scored
    clear_scored(out)
    assert not (out / "complete.json").exists()


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(StoreError, match="missing"):
        mark_scored(tmp_path, [tmp_path / "scores.nc"])
