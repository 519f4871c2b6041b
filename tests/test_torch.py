"""Device, precision and batch-size resolution; the one safe checkpoint loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from geoseg._torch import resolve_batch_size, resolve_device, resolve_precision, safe_load
from geoseg.errors import CheckpointError, ConfigError


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device='gpu': use one of auto, cpu, cuda"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available")
def test_cuda_without_a_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device.*use --device cpu"):
        resolve_device("cuda")


def test_resolve_precision_and_batch_size() -> None:
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_batch_size(None, "cuda") == 32
    assert resolve_batch_size(None, "cpu") == 4
    assert resolve_batch_size(7, "cuda") == 7


def test_safe_load_reads_weights_and_plain_data(tmp_path: Path) -> None:
    p = tmp_path / "w.pt"
    torch.save({"w": torch.arange(3), "meta": {"name": "x"}}, p)
    obj = safe_load(p)
    assert torch.equal(obj["w"], torch.arange(3)) and obj["meta"] == {"name": "x"}


class Evil:
    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path("PWNED"), "x"))


def test_safe_load_refuses_code_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load.*tampered.*do this"):
        safe_load(p, hint="do this")
    assert not (tmp_path / "PWNED").exists()


def test_safe_load_maps_every_unreadable_file_to_one_error(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(100)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    for p in (cut, empty):
        with pytest.raises(CheckpointError, match=rf"{p.name}: not a readable state dict.*; fix"):
            safe_load(p, what="state dict", hint="fix")
    for p in (junk, plain):  # torch reads these as (refused) legacy pickles
        with pytest.raises(CheckpointError, match=rf"{p.name}: .*; fix$"):
            safe_load(p, what="state dict", hint="fix")
    with pytest.raises(CheckpointError, match=r"missing\.pt: state dict not found; fix"):
        safe_load(tmp_path / "missing.pt", what="state dict", hint="fix")
