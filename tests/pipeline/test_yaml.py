from __future__ import annotations

from pathlib import Path

from geoseg.pipeline._yaml import read_job_yaml


def test_yaml_12_integers_keep_tile_ids_and_octal_looking_numbers_as_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("ids: [2_13, 5_15]\nworkers: 017\nn: 12\nx: 0x1f\n")
    data, duplicates, fatal = read_job_yaml(path)
    assert data == {"ids": ["2_13", "5_15"], "workers": "017", "n": 12, "x": "0x1f"}
    assert duplicates == [] and fatal == []


def test_duplicate_keys_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("a: 1\nsteps:\n  predict: {}\n  predict: {tta: flip}\n")
    _, duplicates, fatal = read_job_yaml(path)
    assert duplicates == ["line 4: key 'predict' is given twice; keep one"] and fatal == []


def test_unreadable_and_broken_files_are_fatal(tmp_path: Path) -> None:
    assert read_job_yaml(tmp_path / "none.yaml")[2][0].startswith("cannot read the job file")
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n")
    data, _, fatal = read_job_yaml(tmp_path / "bad.yaml")
    assert data is None and len(fatal) == 1 and fatal[0].startswith("not valid YAML")
