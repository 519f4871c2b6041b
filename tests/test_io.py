from __future__ import annotations

from pathlib import Path

import pytest

from geoseg._io import atomic_path
from geoseg.errors import OutputExistsError


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "a.txt"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp.suffix == ".txt" and tmp != out
        tmp.write_text("x")
        assert not out.exists()
    assert out.read_text() == "x" and list(out.parent.iterdir()) == [out]


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_never_clobber_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_path(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "old"
    with atomic_path(out, overwrite=True) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"


def test_atomic_path_replaces_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "store"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_atomic_folder_replaces_a_symlink_or_a_file_without_leftovers(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "x").write_text("x")
    (tmp_path / "out").symlink_to("target")
    with atomic_path(tmp_path / "out", overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target"]
    assert (tmp_path / "target" / "x").exists() and not (tmp_path / "out").is_symlink()
    (tmp_path / "f").write_text("file")
    with atomic_path(tmp_path / "f", overwrite=True) as tmp:
        tmp.mkdir()
    assert (tmp_path / "f").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out", "target"]


def test_a_write_removes_what_a_killed_write_of_the_same_output_left(tmp_path: Path) -> None:
    from geoseg._io import atomic_path, remove_stale_temporaries

    final = tmp_path / "city.gpkg"
    stale = [
        tmp_path / ".city.0123abcd.partial.gpkg",
        tmp_path / ".city.0123abcd.partial.gpkg-journal",
        tmp_path / ".city.89abcdef.partial.gpkg.aux.xml",
    ]
    stage = tmp_path / ".city.x1y2_z3.stage"
    others = [tmp_path / ".town.0123abcd.partial.gpkg", tmp_path / "city.gpkg.txt"]
    for p in stale + others:
        p.write_text("x")
    stage.mkdir()
    with atomic_path(final) as tmp:
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert not any(p.exists() for p in stale)
    assert stage.is_dir() and all(p.exists() for p in others)  # stages: the COG writer's own
    assert remove_stale_temporaries(final, stages=True) == [stage]
