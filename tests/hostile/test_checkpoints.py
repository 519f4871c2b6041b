"""Hostile checkpoints: every unusable ``-m`` file is refused in one line, before any work.

Each case runs the real CLI and asserts the exit code, ONE error line naming the checkpoint
file, no traceback, and an unchanged tree (no output folder, no ``.{scene}.partial``, no
marker file of a pickle that would run code). The last cases make a block fail on a worker:
one line naming the scene, no ``Compute Failed`` dump, the work folder removed or resumable.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.hostile.helpers import fails_cleanly, run, snapshot, tiny_checkpoint
from tests.predict.helpers import random_scene

Payload = dict[str, Any]


@pytest.fixture(scope="module")
def good_payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tiny checkpoint (SegNet of width 4, 3 bands, 6 classes, 32 px tiles)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("good") / "good.pt")


@pytest.fixture
def case(tmp_path: Path, good_payload: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    monkeypatch.chdir(tmp_path)
    yield Case(tmp_path, good_payload)


class Case:
    """A scene, a folder for hostile checkpoints and the output folder (not yet there)."""

    def __init__(self, root: Path, good: Path) -> None:
        self.root = root
        self.good = good
        self.scene = random_scene(root, 40, 40)
        self.out = root / "maps"
        self.marker = root / "PWNED"

    def payload(self) -> Payload:
        p: Payload = torch.load(self.good, weights_only=True)
        return p

    def save(self, name: str, obj: object) -> Path:
        path = self.root / name
        torch.save(obj, path)
        return path

    def edited(self, name: str, edit: Callable[[Payload], object]) -> Path:
        p = self.payload()
        edit(p)
        return self.save(name, p)

    def predict_fails(self, ckpt: Path, *extra: object, code: int = 1) -> str:
        failure = fails_cleanly(
            "predict",
            self.scene.image,
            "-m",
            ckpt,
            "-o",
            self.out,
            "--device",
            "cpu",
            "--workers",
            "1",
            *extra,
            watch=self.root,
            code=code,
            names=str(ckpt.name),
        )
        assert not self.out.exists()
        assert not self.marker.exists()
        return failure.message


# -- files that are not checkpoints at all ---------------------------------------------------


def test_zero_byte_file(case: Case) -> None:
    ckpt = case.root / "empty.pt"
    ckpt.write_bytes(b"")
    assert "the file is empty" in case.predict_fails(ckpt)


def test_text_file_named_pt(case: Case) -> None:
    ckpt = case.root / "notes.pt"
    ckpt.write_text("these are not weights\n")
    assert "not a torch archive" in case.predict_fails(ckpt)


def test_truncated_checkpoint(case: Case) -> None:
    ckpt = case.root / "cut.pt"
    ckpt.write_bytes(case.good.read_bytes()[: case.good.stat().st_size // 2])
    assert "truncated or corrupt" in case.predict_fails(ckpt)


def test_bit_flipped_copy(case: Case) -> None:
    data = bytearray(case.good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt = case.root / "flipped.pt"
    ckpt.write_bytes(bytes(data))
    assert "fails its checksum" in case.predict_fails(ckpt)


def test_directory_named_pt(case: Case) -> None:
    ckpt = case.root / "model.pt"
    ckpt.mkdir()
    assert "is a directory" in case.predict_fails(ckpt, code=2)


def test_state_dict_instead_of_checkpoint(case: Case) -> None:
    ckpt = case.save("weights.pt", case.payload()["state_dict"])
    assert "not a geoseg checkpoint" in case.predict_fails(ckpt)


def test_plain_pickle(case: Case) -> None:
    ckpt = case.root / "plain.pt"
    ckpt.write_bytes(pickle.dumps({"format": "geoseg-checkpoint", "bands": ["red"]}))
    case.predict_fails(ckpt)


def test_hand_made_pickle_calling_os_system_never_runs(case: Case) -> None:
    ckpt = case.root / "evil.pt"
    command = f"touch {case.marker}".encode()
    ckpt.write_bytes(b"cos\nsystem\n(S'" + command + b"'\ntR.")
    case.predict_fails(ckpt)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_torch_saved_custom_class_never_runs(case: Case) -> None:
    ckpt = case.edited("evil2.pt", lambda p: p["metrics"].update(x=_Evil(case.marker)))
    assert "refused to load" in case.predict_fails(ckpt)


def test_newer_format_version(case: Case) -> None:
    ckpt = case.edited("future.pt", lambda p: p.update(format_version=99))
    assert "upgrade geoseg" in case.predict_fails(ckpt)


def test_missing_field(case: Case) -> None:
    ckpt = case.edited("nobands.pt", lambda p: p.pop("bands"))
    assert "'bands'" in case.predict_fails(ckpt)


# -- well-formed checkpoints that are wrong ----------------------------------------------------


def test_weights_of_the_wrong_shape(case: Case) -> None:
    def edit(p: Payload) -> None:
        key = next(iter(p["state_dict"]))
        p["state_dict"][key] = torch.zeros(2, 2)

    msg = case.predict_fails(case.edited("shape.pt", edit))
    assert "has shape [2, 2]" in msg


def test_weights_missing_a_key(case: Case) -> None:
    msg = case.predict_fails(case.edited("missing.pt", lambda p: p["state_dict"].popitem()))
    assert "the weights lack" in msg


def test_weights_with_an_unexpected_key(case: Case) -> None:
    edit = lambda p: p["state_dict"].update(extra=torch.zeros(1))  # noqa: E731
    assert "'extra'" in case.predict_fails(case.edited("extra.pt", edit))


def test_weights_that_are_not_tensors(case: Case) -> None:
    def edit(p: Payload) -> None:
        key = next(iter(p["state_dict"]))
        p["state_dict"][key] = [1.0, 2.0]

    assert "not a tensor" in case.predict_fails(case.edited("list.pt", edit))


def test_weights_with_nan(case: Case) -> None:
    def edit(p: Payload) -> None:
        key = next(iter(p["state_dict"]))
        p["state_dict"][key][...] = math.nan

    assert "NaN" in case.predict_fails(case.edited("nan.pt", edit))


def test_weights_of_another_architecture(case: Case) -> None:
    edit = lambda p: p["arch"].update(name="fcn_resnet18")  # noqa: E731
    case.predict_fails(case.edited("other.pt", edit))


def test_unknown_architecture(case: Case) -> None:
    edit = lambda p: p["arch"].update(name="transformer9000")  # noqa: E731
    assert "unknown architecture" in case.predict_fails(case.edited("arch.pt", edit))


def test_unknown_architecture_argument(case: Case) -> None:
    edit = lambda p: p["arch"]["args"].update(dropout=3)  # noqa: E731
    assert "'dropout'" in case.predict_fails(case.edited("arg.pt", edit))


def test_bad_architecture_argument_value(case: Case) -> None:
    edit = lambda p: p["arch"]["args"].update(base_width="wide")  # noqa: E731
    assert "base_width" in case.predict_fails(case.edited("width.pt", edit))


def test_architecture_arguments_not_a_mapping(case: Case) -> None:
    edit = lambda p: p["arch"].update(args=[1, 2])  # noqa: E731
    case.predict_fails(case.edited("args.pt", edit))


def test_input_channels_disagree_with_bands(case: Case) -> None:
    edit = lambda p: p["arch"]["args"].update(in_channels=4)  # noqa: E731
    assert "in_channels=4" in case.predict_fails(case.edited("cin.pt", edit))


@pytest.mark.parametrize(
    ("std", "why"),
    [([0.0, 1.0, 1.0], "0.0"), ([1.0, -2.0, 1.0], "-2.0"), ([1.0, 1.0, math.nan], "nan")],
)
def test_std_not_positive(case: Case, std: list[float], why: str) -> None:
    msg = case.predict_fails(case.edited("std.pt", lambda p: p.update(std=std)))
    assert "std of band" in msg and why in msg


def test_mean_not_finite(case: Case) -> None:
    edit = lambda p: p.update(mean=[1.0, math.inf, 1.0])  # noqa: E731
    assert "mean of band 'green'" in case.predict_fails(case.edited("mean.pt", edit))


def test_fewer_means_than_bands(case: Case) -> None:
    msg = case.predict_fails(case.edited("means.pt", lambda p: p.update(mean=[1.0, 2.0])))
    assert "3 bands but 2 means" in msg


def test_no_bands(case: Case) -> None:
    edit = lambda p: p.update(bands=[], mean=[], std=[])  # noqa: E731
    assert "no input bands" in case.predict_fails(case.edited("nob.pt", edit))


def test_one_class_schema(case: Case) -> None:
    def edit(p: Payload) -> None:
        p["schema"]["classes"] = p["schema"]["classes"][:1]

    assert "one class" in case.predict_fails(case.edited("one.pt", edit))


@pytest.mark.parametrize("tile", [0, 8, -64])
def test_tile_size_too_small(case: Case, tile: int) -> None:
    msg = case.predict_fails(case.edited("tile.pt", lambda p: p.update(tile_size=tile)))
    assert f"tile size {tile}" in msg and "overlap" not in msg


@pytest.mark.parametrize("gsd", [0.0, -0.5, math.nan, math.inf])
def test_gsd_not_positive(case: Case, gsd: float) -> None:
    msg = case.predict_fails(case.edited("gsd.pt", lambda p: p.update(gsd=gsd)))
    assert "ground sample distance" in msg


def test_bad_checkpoint_leaves_an_existing_output_folder_as_it_was(case: Case) -> None:
    case.out.mkdir()
    (case.out / "other_classes.tif").write_bytes(b"an earlier result")
    before = snapshot(case.root)
    ckpt = case.edited("tile.pt", lambda p: p.update(tile_size=0))
    rc, output, exc = run("predict", case.scene.image, "-m", ckpt, "-o", case.out)
    assert (rc, exc) == (1, None) and "tile.pt" in output, output
    after = snapshot(case.root)
    assert {k: v for k, v in after.items() if k != str(ckpt)} == before


# -- through `geoseg train --init-weights` -----------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "evil", "text"])
def test_train_init_weights_refused(case: Case, train_store: Path, kind: str) -> None:
    init = case.root / f"{kind}.pth"
    if kind == "empty":
        init.write_bytes(b"")
    elif kind == "text":
        init.write_text("not weights")
    else:
        init.write_bytes(b"cos\nsystem\n(S'touch " + str(case.marker).encode() + b"'\ntR.")
    fails_cleanly(
        "train",
        train_store,
        "-o",
        case.root / "model.pt",
        "--model",
        "fcn_resnet18",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--init-weights",
        init,
        watch=case.root,
        code=1,
        names=init.name,
    )
    assert not case.marker.exists()


# -- a block that fails on a worker ------------------------------------------------------------


class _Dumps(logging.Handler):
    """Collects what the Dask worker logs (after its logger's filters)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def worker_log() -> Iterator[_Dumps]:
    handler = _Dumps()
    log = logging.getLogger("distributed.worker")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


def _failing_forward(monkeypatch: pytest.MonkeyPatch, *, after: int) -> None:
    """SegNet's forward fails (as out of memory would) after ``after`` calls."""
    from geoseg.models import SegNet

    forward = SegNet.forward
    calls = [0]
    lock = threading.Lock()

    def fail(self: SegNet, x: torch.Tensor) -> torch.Tensor:
        with lock:
            calls[0] += 1
            n = calls[0]
        if n > after:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore details")
        return forward(self, x)

    monkeypatch.setattr(SegNet, "forward", fail)


def test_block_failure_is_one_line_and_leaves_nothing(
    case: Case, monkeypatch: pytest.MonkeyPatch, worker_log: _Dumps
) -> None:
    _failing_forward(monkeypatch, after=0)
    msg = fails_cleanly(
        "predict",
        case.scene.image,
        "-m",
        case.good,
        "-o",
        case.out,
        "--device",
        "cpu",
        "--workers",
        "1",
        watch=case.root,
        code=1,
        names=(str(case.scene.image), repr(case.scene.id), "RuntimeError: CUDA out of memory"),
    ).message
    assert "nothing of it was written" in msg
    assert not any(m.startswith("Compute Failed") for m in worker_log.messages)
    assert not case.out.exists()


def test_block_failure_keeps_finished_blocks_and_the_same_command_resumes(
    case: Case, monkeypatch: pytest.MonkeyPatch, worker_log: _Dumps
) -> None:
    scene = random_scene(case.root, 96, 96, seed=1)
    args = ("predict", scene.image, "-m", case.good, "-o", case.out, "--device", "cpu")
    args += ("--workers", "1", "--block-size", "32", "--overlap", "8")
    _failing_forward(monkeypatch, after=2)
    rc, output, exc = run(*args)
    assert (rc, exc) == (1, None), output
    errors = [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert f"scene {scene.id!r}" in errors[0] and "run the same command again" in errors[0]
    work = case.out / f".{scene.id}.partial"
    assert (work / "state.json").is_file() and list(work.glob("b_*")), sorted(work.iterdir())
    assert not list(case.out.glob("*.tif"))
    assert not any(m.startswith("Compute Failed") for m in worker_log.messages)
    monkeypatch.undo()
    rc, output, exc = run(*args)
    assert (rc, exc) == (0, None), output
    assert "resumed" in output and not work.exists()


@pytest.mark.slow  # a fresh process imports torch and dask: ~10 s on a shared machine
def test_block_failure_prints_no_dask_dump_on_stderr(case: Case) -> None:
    """The real command in a fresh process: stderr holds the one error line, nothing else."""
    code = (
        "import sys\n"
        "from geoseg.models import SegNet\n"
        "def fail(self, x):\n"
        "    raise RuntimeError('boom in a block')\n"
        "SegNet.forward = fail\n"
        "from geoseg.cli.main import cli\n"
        "cli(sys.argv[1:], prog_name='geoseg')\n"
    )
    before = snapshot(case.root)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            str(case.scene.image),
            "-m",
            str(case.good),
            "-o",
            str(case.out),
            "--device",
            "cpu",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and "boom in a block" in lines[0], lines
    assert "Compute Failed" not in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(case.root) == before
