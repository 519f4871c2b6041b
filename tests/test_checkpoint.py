from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

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
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable checkpoint"):
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
    with pytest.raises(CheckpointError, match=r"empty\.pt: not a readable checkpoint"):
        load_checkpoint(empty)


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
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "w.pt").build_model()


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
