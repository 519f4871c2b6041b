"""``geoseg tile --footprints``: the contact target from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.tiles import read_store
from tests.contact_helpers import make_contact_scenes


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a bug, not a message: show it
    return res.exit_code, res.output


def test_tile_with_footprints_and_its_errors(tmp_path: Path) -> None:
    specs, fp = make_contact_scenes(tmp_path / "scenes", n=1, size=96)
    image = str(specs[0].image)
    labels = str(specs[0].labels)
    base = ["tile", "--image", image, "--labels", labels, "--size", "48", "--overlap", "0"]
    code, out = run(*base, "-o", str(tmp_path / "s"), "--footprints", str(fp))
    assert code == 0, out
    meta, index = read_store(tmp_path / "s")
    want = {"width_m": 1.0, "footprints": str(fp.resolve()), "layer": "buildings"}
    assert meta["contact"] == want
    assert (index["contact"] > 0).any()
    code, out = run(
        *base, "-o", str(tmp_path / "w"), "--footprints", str(fp), "--contact-width", "0.1"
    )
    assert code == 0, out
    narrow = read_store(tmp_path / "w")[1]["contact"].sum()
    assert 0 < narrow < index["contact"].sum()
    # errors: one line, nothing written
    for args, needle, want in (
        (["--footprints", str(tmp_path / "nope.gpkg")], "footprints file not found", 1),
        (["--footprints", str(fp), "--footprints-layer", "roofs"], "no layer 'roofs'", 1),
        (["--footprints-layer", "buildings"], "--footprints-layer needs --footprints", 2),
        (["--footprints", str(fp), "--contact-width", "0"], "contact_width", 1),
    ):
        code, out = run(*base, "-o", str(tmp_path / "bad"), *args)
        assert code == want, out
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        assert lines[-1].startswith("Error:") and needle in lines[-1], out
        assert "Traceback" not in out
        assert not (tmp_path / "bad").exists()
    assert json.loads((tmp_path / "s" / "tiles.json").read_text())["contact"]["width_m"] == 1.0
