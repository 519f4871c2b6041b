"""Device, precision and batch-size resolution; the one safe checkpoint loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from geoseg._torch import (
    is_cuda,
    resolve_batch_size,
    resolve_device,
    resolve_precision,
    safe_load,
    torch_device,
)
from geoseg.errors import CheckpointError, ConfigError


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    here = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == here
    for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1", "cuda1", "Cuda", " cpu", "cpu\n"):
        with pytest.raises(ConfigError, match="use one of auto, cpu, cuda, cuda:N$"):
            resolve_device(bad)
    with pytest.raises(ConfigError, match="device='gpu': use one of auto, cpu, cuda"):
        resolve_device("gpu")


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int, current: int = 0) -> None:
    """Pretend that this process sees ``count`` CUDA devices (the current one ``current``)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)


def test_cuda_devices_resolve_to_a_named_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cuda:01") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    assert torch_device("cuda:1") == torch.device("cuda", 1)
    _gpus(monkeypatch, 2, current=1)  # the thread chose GPU 1 (torch.cuda.set_device)
    assert resolve_device("cuda") == "cuda:1"
    assert resolve_device("auto") == "cuda:1"
    assert resolve_device("cuda:0") == "cuda:0"


def test_a_cuda_index_beyond_the_devices_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _gpus(monkeypatch, 2)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:3")
    assert str(err.value) == (
        "--device cuda:3: this machine has 2 CUDA devices (0-1); use --device cuda:0 to cuda:1, "
        "or cuda"
    )
    with pytest.raises(ConfigError, match="cuda:2: this machine has 2 CUDA devices"):
        resolve_device("cuda:2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    _gpus(monkeypatch, 1)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:3")
    assert str(err.value) == (
        "--device cuda:3: this process sees 1 CUDA device (0) (CUDA_VISIBLE_DEVICES=3, which "
        "numbers the devices it shows from 0); use --device cuda:0 or cuda"
    )


def test_cuda_without_a_device_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == "cpu"
    for device in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(
            ConfigError, match=f"^--device {device}: no CUDA device.*use --device cpu or auto$"
        ):
            resolve_device(device)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_precision_and_batch_size_on_any_cuda_device(device: str) -> None:
    assert is_cuda(device)
    assert resolve_precision("auto", device) == "bf16"
    assert resolve_precision("fp32", device) == "fp32"
    assert resolve_batch_size(None, device) == 32
    assert resolve_batch_size(7, device) == 7


def test_precision_and_batch_size_on_the_cpu() -> None:
    assert not is_cuda("cpu") and not is_cuda("auto")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_batch_size(None, "cpu") == 4


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
