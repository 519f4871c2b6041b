from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from geoseg.checkpoint import Checkpoint, file_sha256, load_checkpoint, save_checkpoint
from geoseg.errors import CheckpointError, OutputExistsError
from geoseg.models import build_model, model_spec
from geoseg.schema import POTSDAM

BANDS = ("red", "green", "blue", "nir", "ndsm")


def make_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    spec = model_spec("fcn_resnet18", in_channels=5, num_classes=6)
    model = build_model(spec["name"], **spec["args"])
    return Checkpoint(
        arch=spec,
        state_dict=model.state_dict(),
        bands=BANDS,
        mean=(90.0, 95.0, 85.0, 120.0, 2.0),
        std=(40.0, 38.0, 35.0, 50.0, 4.0),
        schema=POTSDAM,
        tile_size=256,
        gsd=0.05,
        metrics={"val_miou": 0.5, "epoch": 3},
        config={"lr": 0.001},
    )


def test_roundtrip_rebuilds_the_same_model(tmp_path: Path) -> None:
    ck = make_checkpoint()
    p = save_checkpoint(ck, tmp_path / "m.pt")
    back = load_checkpoint(p)
    assert back.bands == BANDS and back.schema == POTSDAM and back.tile_size == 256
    assert back.metrics == {"val_miou": 0.5, "epoch": 3} and back.geoseg_version
    x = torch.randn(1, 5, 64, 64)
    with torch.no_grad():
        a = ck.build_model()(x)
        b = back.build_model()(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(OutputExistsError):
        save_checkpoint(ck, p)
    assert len(file_sha256(p)) == 64


class Evil:
    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path("PWNED"), "x"))


def test_tampered_file_is_refused_without_running_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    payload = make_checkpoint().to_payload()
    payload["metrics"] = {"x": Evil()}
    p = tmp_path / "evil.pt"
    torch.save(payload, p)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load.*tampered"):
        load_checkpoint(p)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    p = save_checkpoint(make_checkpoint(), tmp_path / "m.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    with pytest.raises(CheckpointError, match=r"cut\.pt: the checkpoint is truncated or corrupt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a geoseg checkpoint"):
        load_checkpoint(foreign)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match=r"plain\.pt"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: the file is empty \(0 bytes\)"):
        load_checkpoint(empty)
    flipped = bytearray(p.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"flip\.pt: the checkpoint is corrupt \(entry .*"):
        load_checkpoint(tmp_path / "flip.pt")
    text = tmp_path / "text.pt"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a geoseg checkpoint \(not a torch"):
        load_checkpoint(text)


def test_malformed_fields(tmp_path: Path) -> None:
    payload = make_checkpoint().to_payload()
    payload["bands"] = "red"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="'bands'"):
        load_checkpoint(tmp_path / "bad.pt")
    payload = make_checkpoint().to_payload()
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")
    payload = make_checkpoint().to_payload()
    payload["state_dict"] = {"nope": torch.zeros(1)}
    torch.save(payload, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"w\.pt: the weights lack 'backbone\.conv1\.weight'"):
        load_checkpoint(tmp_path / "w.pt")


def _first_key(p: dict[str, Any]) -> str:
    return next(iter(p["state_dict"]))


# (edit of the saved payload, what the one-line message must say)
WRONG: list[tuple[Callable[[dict[str, Any]], object], str]] = [
    (lambda p: p["state_dict"].update({_first_key(p): torch.zeros(2)}), "has shape [2]"),
    (lambda p: p["state_dict"].popitem(), "the weights lack"),
    (lambda p: p["state_dict"].update(extra=torch.zeros(1)), "'extra', which architecture"),
    (lambda p: p["state_dict"].update({_first_key(p): 3.0}), "is a float, not a tensor"),
    (
        lambda p: p["state_dict"].update({_first_key(p): p["state_dict"][_first_key(p)].long()}),
        "is int64 but architecture 'fcn_resnet18' needs float32",
    ),
    (lambda p: p["state_dict"][_first_key(p)].fill_(math.inf), "NaN or infinite"),
    (lambda p: p["arch"].update(name="nosuch"), "unknown architecture 'nosuch' (known: "),
    (lambda p: p["arch"]["args"].update(encoder="resnet18"), "no argument 'encoder'"),
    (lambda p: p["arch"].update(args="x"), "arguments of architecture 'fcn_resnet18' are not"),
    (lambda p: p["arch"]["args"].pop("in_channels"), "in_channels=None but"),
    (lambda p: p["arch"]["args"].update(num_classes=2), "num_classes=2 but the checkpoint lists 6"),
    (lambda p: p.update(std=[1.0, 1.0, 0.0, 1.0, 1.0]), "the std of band 'blue' is 0.0"),
    (lambda p: p.update(std=[1.0, 1.0, 1.0, 1.0, math.nan]), "the std of band 'ndsm' is nan"),
    (lambda p: p.update(mean=[1.0, 1.0, 1.0, 1.0, math.inf]), "the mean of band 'ndsm' is inf"),
    (lambda p: p.update(mean=[1.0, 2.0]), "5 bands but 2 means and 5 stds"),
    (lambda p: p.update(bands=["red"] * 5), "band 'red' is listed twice"),
    (lambda p: p.update(bands=[], mean=[], std=[]), "no input bands"),
    (lambda p: p["schema"].update(classes=p["schema"]["classes"][:1]), "only one class"),
    (lambda p: p.update(tile_size=0), "tile size 0 is not an integer >= 16"),
    (lambda p: p.update(tile_size=True), "'tile_size' is missing or not a int"),
    (lambda p: p.update(gsd=0), "ground sample distance 0.0 is not a number > 0"),
    (lambda p: p.update(gsd=-math.inf), "ground sample distance -inf"),
    (lambda p: p.update(format_version=0), "format version 0 is invalid"),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(make_checkpoint(), tmp_path_factory.mktemp("ck") / "m.pt")


@pytest.mark.parametrize(("edit", "says"), WRONG)
def test_a_wrong_checkpoint_is_refused_in_one_line_naming_the_file(
    tmp_path: Path, saved: Path, edit: Callable[[dict[str, Any]], object], says: str
) -> None:
    payload = torch.load(saved, weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "wrong.pt")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'wrong.pt'}") and "\n" not in msg, msg
    assert says in msg, msg
    assert msg.count("; ") >= 1, msg  # what is wrong; how to fix it


def test_a_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "m.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"m\.pt: is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "m.pt")


def test_validate_in_memory_and_build_model_messages() -> None:
    ck = make_checkpoint()
    ck.validate()  # a valid one passes, named "checkpoint" without a file
    bad = replace(ck, gsd=0.0)
    with pytest.raises(CheckpointError, match=r"^checkpoint: ground sample distance 0\.0"):
        bad.validate()
    with pytest.raises(CheckpointError, match=r"^x\.pt: ground sample distance 0\.0"):
        bad.validate("x.pt")
    # The normalisation is checked as soon as a checkpoint is made.
    with pytest.raises(CheckpointError, match=r"checkpoint of 'fcn_resnet18': 5 bands but 2 means"):
        replace(ck, mean=(1.0, 2.0))
    with pytest.raises(CheckpointError, match=r"the std of band 'ndsm' is -1\.0"):
        replace(ck, std=(1.0, 1.0, 1.0, 1.0, -1.0))
    wrong = replace(ck, state_dict={"nope": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="do not fit architecture 'fcn_resnet18'"):
        wrong.build_model()


def test_validation_allocates_no_weights() -> None:
    """The architecture is built on the meta device: a huge width costs nothing to refuse."""
    ck = make_checkpoint()
    huge = replace(ck, arch={"name": "segnet", "args": {**ck.arch["args"], "base_width": 1024}})
    with pytest.raises(CheckpointError, match="the weights lack"):
        huge.validate()
    for args, says in (
        ({"base_width": 4096}, "base_width=4096: must be an integer of 1..1024"),
        ({"encoder": "tu-nosuch"}, "timm has no model 'nosuch'"),
    ):
        name = "segnet" if "base_width" in args else "unet"
        bad = replace(ck, arch={"name": name, "args": {**ck.arch["args"], **args}})
        with pytest.raises(CheckpointError, match=f"cannot be built.*{re.escape(says)}"):
            bad.validate()


def test_loads_in_a_fresh_process(tmp_path: Path) -> None:
    p = save_checkpoint(make_checkpoint(), tmp_path / "m.pt")
    code = (
        "import sys, torch\n"
        "from geoseg.checkpoint import load_checkpoint\n"
        "ck = load_checkpoint(sys.argv[1])\n"
        "torch.manual_seed(1)\n"
        "x = torch.randn(1, 5, 40, 40)\n"
        "print(float(ck.build_model()(x).sum()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(p)], capture_output=True, text=True, check=True
    )
    torch.manual_seed(1)
    x = torch.randn(1, 5, 40, 40)
    with torch.no_grad():
        here = float(make_checkpoint().build_model()(x).sum())
    assert float(out.stdout) == pytest.approx(here, rel=1e-5)
