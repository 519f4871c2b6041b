"""geoseg.evaluate.report: JSON reports and required minimums."""

from __future__ import annotations

import json

import pytest

from geoseg.errors import OutputExistsError
from geoseg.evaluate import below_minimum, write_report


def test_write_report_never_clobbers(tmp_path):
    out = write_report({"miou": 0.5}, tmp_path / "m.json")
    assert json.loads(out.read_text()) == {"miou": 0.5}
    with pytest.raises(OutputExistsError):
        write_report({"miou": 0.6}, out)
    write_report({"miou": 0.6}, out, overwrite=True)
    assert json.loads(out.read_text()) == {"miou": 0.6}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_below_minimum():
    assert below_minimum("mIoU", 0.8, None) is None
    assert below_minimum("mIoU", 0.8, 0.8) is None
    assert "0.7000" in below_minimum("mIoU", 0.7, 0.8)
    assert "undefined" in below_minimum("mIoU", float("nan"), 0.1)
