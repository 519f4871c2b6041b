"""Device smoke test of prediction and training: ``python -m geoseg.bench.device``.

Runs on the machine with the GPU (``--device cuda``, the default, or ``cuda:N``) and, as a dry
run, on the CPU (``--device cpu``: the device-against-CPU comparisons are then trivial). It
uses the public API only and checks what the CPU tests cannot:

* ``blend_device_vs_cpu``: quantised probabilities and integer weights added into a
  :class:`geoseg.blend.Accumulator` on the device and on the CPU give the same sums, and
  :func:`geoseg.blend.decode` the same classes and probabilities, bit for bit;
* ``predict_{tiny,fcn}_device_vs_cpu``: :func:`geoseg.predict.predict_scenes` of the bench
  scene with :func:`~geoseg.bench.scene.tiny_model` and an untrained ``fcn_resnet18``
  checkpoint: the device's class maps agree with the CPU's (fp32) on at least
  :data:`FP32_AGREEMENT` of the pixels in fp32, :data:`BF16_AGREEMENT` in bf16;
* ``predict_repeatable``: a device run twice, and with another block size and worker
  count, gives identical classes and probabilities (the integer-blending promise);
* ``predict_compile``: ``compile=True`` runs and reports ``resolved.compile_warmup_s`` (on
  CUDA it must not fall back, and agree with the eager model on :data:`BF16_AGREEMENT`);
* ``train_steps``: :func:`geoseg.train.train_step` with the fused AdamW
  (:func:`geoseg.train.adamw_fused`): bf16 on CUDA, finite and falling loss, finite weights.

Each check runs on its own (a failure is recorded with its traceback and the next check
runs): one ``[PASS]`` or ``[FAIL]`` line each, then ``smoke: N passed, M failed``; exit code 0
only when all passed (2 for a bad ``--device``). ``--small``: small sizes for the CPU;
``--only NAME``: some checks; ``--json PATH``: the results. A developer tool, not a command.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = [
    "BF16_AGREEMENT",
    "CHECKS",
    "FP32_AGREEMENT",
    "CheckError",
    "CheckResult",
    "Sizes",
    "SmokeConfig",
    "main",
    "run_check",
    "run_checks",
    "summary_line",
]

FP32_AGREEMENT = 0.999
"""Least share of pixels whose class agrees between the device and the CPU in fp32."""
BF16_AGREEMENT = 0.99
"""Least share of pixels whose class agrees between the device in bf16 and the CPU in fp32."""
_FCN = "fcn_resnet18"
_CLASSES = 6  # POTSDAM


class CheckError(Exception):
    """A check found something wrong (its message says what)."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


@dataclass(frozen=True)
class Sizes:
    """The sizes of the checks (``--small`` for a quick CPU run).

    Attributes:
        scene: Synthetic scene edge (px).
        tile: Tile edge of the predictions (model pixels).
        overlap: Tile overlap.
        blocks: Two output block sizes (the second for the repeatability check).
        batch: Tiles per model call.
        blend: Edge of the blending check's rectangle.
        train: Training check: batch, chip edge, steps.
    """

    scene: int
    tile: int
    overlap: int
    blocks: tuple[int, int]
    batch: int
    blend: int
    train: tuple[int, int, int]

    @classmethod
    def pick(cls, small: bool) -> Sizes:
        """The full sizes, or the small ones."""
        if small:
            return cls(192, 64, 16, (96, 48), 4, 320, (2, 64, 6))
        return cls(1024, 256, 64, (512, 384), 8, 2048, (8, 256, 20))


@dataclass(frozen=True)
class SmokeConfig:
    """Where and how big the checks run.

    Attributes:
        device: A resolved device, ``cpu`` or ``cuda:N``.
        small: Small sizes.
        workdir: Folder for scenes, checkpoints and outputs.
        memo: Results shared between checks (the CPU references), filled as they run.
    """

    device: str
    small: bool
    workdir: Path
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cuda(self) -> bool:
        """Whether the device is a CUDA device."""
        return self.device.startswith("cuda")

    @property
    def sizes(self) -> Sizes:
        """The sizes of the checks."""
        return Sizes.pick(self.small)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: The check.
        ok: Whether it passed.
        seconds: Its wall time.
        detail: What it measured, or why it failed.
    """

    name: str
    ok: bool
    seconds: float
    detail: str


Check = Callable[[SmokeConfig], str]
"""A check: raises (:class:`CheckError` or anything else) on failure, else returns a detail."""


# -- the harness -----------------------------------------------------------------------------


def run_check(name: str, check: Check, config: SmokeConfig, *, stream: TextIO) -> CheckResult:
    """Run one check; record a failure (with its traceback on ``stream``) instead of raising.

    Writes ``[PASS] name (s): detail`` or ``[FAIL] name (s): error`` to ``stream``.
    """
    t0 = time.perf_counter()
    # A test harness: any exception of a check is its failure, recorded with its text (and
    # traceback) and not raised, so that the next check still runs. Nothing is swallowed
    # silently, and KeyboardInterrupt / SystemExit (not Exception) still stop the run.
    try:
        detail, ok = check(config), True
        if config.cuda:  # an asynchronous CUDA error fails this check, not the next one
            import torch

            torch.cuda.synchronize(config.device)
    except Exception as exc:
        stream.write(traceback.format_exc())
        detail, ok = f"{type(exc).__name__}: {exc}"[:600], False
    dt = time.perf_counter() - t0
    stream.write(f"[{'PASS' if ok else 'FAIL'}] {name} ({dt:.1f}s): {detail}\n")
    stream.flush()
    return CheckResult(name=name, ok=ok, seconds=round(dt, 2), detail=detail)


def run_checks(
    checks: Sequence[tuple[str, Check]], config: SmokeConfig, *, stream: TextIO
) -> list[CheckResult]:
    """Run ``checks`` in order (each on its own) and write the summary line last."""
    results = [run_check(name, check, config, stream=stream) for name, check in checks]
    stream.write(summary_line(results) + "\n")
    stream.flush()
    return results


def summary_line(results: Sequence[CheckResult]) -> str:
    """``smoke: N passed, M failed`` (and the names of the failed checks)."""
    bad = [r.name for r in results if not r.ok]
    line = f"smoke: {len(results) - len(bad)} passed, {len(bad)} failed"
    return line + (f" ({', '.join(bad)})" if bad else "")


# -- predictions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prediction:
    classes: np.ndarray
    probs: np.ndarray
    sidecar: dict[str, Any]
    warnings: tuple[str, ...]
    seconds: float


@contextmanager
def _logged_warnings() -> Iterator[list[logging.LogRecord]]:
    """The warnings geoseg logs meanwhile (a runner logs its compile fallback, and only that)."""
    handler = BufferingHandler(capacity=1 << 20)
    handler.setLevel(logging.WARNING)
    log = logging.getLogger("geoseg")
    log.addHandler(handler)
    try:
        yield handler.buffer
    finally:
        log.removeHandler(handler)


def _scene(config: SmokeConfig) -> Any:
    from geoseg.bench.scene import bench_scene

    return bench_scene(config.workdir / "scenes", config.sizes.scene, dsm=True)


def _model(config: SmokeConfig, name: str) -> Any:
    """A fresh tiny model (a module is moved to its runner's device), or the fcn checkpoint."""
    import torch

    from geoseg.bench.scene import bench_checkpoint, tiny_model

    if name == "tiny":
        return tiny_model(seed=0)
    torch.manual_seed(0)
    return str(bench_checkpoint(config.workdir, _FCN, config.sizes.tile))


def _predict(
    config: SmokeConfig,
    name: str,
    *,
    device: str,
    precision: str,
    block: int | None = None,
    workers: int = 2,
    compile: bool = False,
) -> _Prediction:
    """Predict the scene with model ``name`` (``tiny`` or the fcn) into a fresh folder."""
    import rasterio

    from geoseg.predict import PredictOptions, predict_scenes

    s = config.sizes
    out = Path(tempfile.mkdtemp(prefix=f"pred_{name}_", dir=config.workdir))
    options = PredictOptions(
        tile_size=s.tile,
        overlap=s.overlap,
        batch_size=s.batch,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        block_size=s.blocks[0] if block is None else block,
        workers=workers,
        probabilities=True,
        compile=compile,
    )
    spec, model = _scene(config), _model(config, name)
    with _logged_warnings() as logged:
        t0 = time.perf_counter()
        (rep,) = predict_scenes([spec], model, out, options=options)
        dt = time.perf_counter() - t0
    side = json.loads(rep.sidecar.read_text())
    _expect(
        side["resolved"]["devices"] == [device],
        f"the blocks ran on {side['resolved']['devices']}, not [{device!r}]",
    )
    _expect(rep.probabilities is not None, "no probability raster was written")
    with rasterio.open(rep.classes) as ds:
        classes = ds.read(1)
    with rasterio.open(str(rep.probabilities)) as ds:
        probs = ds.read()
    shutil.rmtree(out, ignore_errors=True)
    warnings = (*rep.warnings, *(r.getMessage() for r in logged))
    return _Prediction(classes, probs, side, warnings, dt)


def _cpu_reference(config: SmokeConfig, name: str) -> _Prediction:
    """The CPU fp32 prediction of model ``name`` (computed once, shared by the checks)."""
    key = f"cpu_fp32_{name}"
    if key not in config.memo:
        config.memo[key] = _predict(config, name, device="cpu", precision="fp32")
    ref: _Prediction = config.memo[key]
    return ref


def _agreement(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    _expect(a.shape == b.shape, f"class maps of shapes {a.shape} and {b.shape}")
    same = a == b
    return float(np.mean(same if where is None else same[where]))


def _decisive(probs: np.ndarray) -> np.ndarray:
    """Pixels whose two most likely classes are more than 2/255 apart (uint8 probabilities)."""
    top = np.sort(probs, axis=0)
    return (top[-1].astype(np.int16) - top[-2]) > 2


def _device_vs_cpu(config: SmokeConfig, name: str) -> str:
    """predict_scenes with model ``name`` (``tiny`` or ``fcn``): the device against the CPU."""
    ref = _cpu_reference(config, name)
    sure = _decisive(ref.probs)
    if not config.cuda:
        got = _predict(config, name, device=config.device, precision="bf16")
        return (
            f"{config.sizes.scene} px, {name}: the device is the CPU (fp32 trivially equal); "
            f"cpu bf16 agrees with fp32 on {_agreement(got.classes, ref.classes):.5f} (on the "
            f"{sure.mean():.1%} of pixels with a top-2 margin over 2/255: "
            f"{_agreement(got.classes, ref.classes, sure):.5f}); cpu {ref.seconds:.1f}s"
        )
    fp32 = _predict(config, name, device=config.device, precision="fp32")
    bf16 = _predict(config, name, device=config.device, precision="bf16")
    import torch

    a32, a16 = _agreement(fp32.classes, ref.classes), _agreement(bf16.classes, ref.classes)
    dp = int(np.abs(fp32.probs.astype(np.int16) - ref.probs.astype(np.int16)).max())
    d32 = _agreement(fp32.classes, ref.classes, sure)
    d16 = _agreement(bf16.classes, ref.classes, sure)
    detail = (
        f"{config.sizes.scene} px, {name}: classes agree with the cpu on {a32:.5f} (fp32, "
        f"max prob diff {dp}/255, cudnn TF32 {torch.backends.cudnn.allow_tf32}) and "
        f"{a16:.5f} (bf16); on the {sure.mean():.1%} of pixels with a cpu top-2 margin over "
        f"2/255: {d32:.5f} and {d16:.5f}; cpu {ref.seconds:.1f}s, {config.device} fp32 "
        f"{fp32.seconds:.1f}s, bf16 {bf16.seconds:.1f}s"
    )
    _expect(a32 >= FP32_AGREEMENT, f"fp32 below {FP32_AGREEMENT}: {detail}")
    _expect(a16 >= BF16_AGREEMENT, f"bf16 below {BF16_AGREEMENT}: {detail}")
    return detail


# -- the checks ------------------------------------------------------------------------------


def check_blend_device_vs_cpu(config: SmokeConfig) -> str:
    """Accumulator sums and decoded outputs: the device's equal the CPU's bit for bit."""
    import torch

    from geoseg.blend import (
        Accumulator,
        BlendKind,
        decode,
        quantize_probs,
        quantize_weights,
        tile_edges,
        weight_bits,
        weight_window,
    )
    from geoseg.blocks import Rect

    s = config.sizes
    n, t, ov = s.blend, s.tile, s.overlap
    stride = t - ov
    rect = Rect(0, 0, n, n)
    bits = weight_bits(math.ceil(t / stride) ** 2)
    rng = np.random.default_rng(0)
    dev = torch.device(config.device)
    accs = {"cpu": Accumulator(rect, _CLASSES), "dev": Accumulator(rect, _CLASSES, device=dev)}
    # tiles start before the rectangle and pass its end: the clipping is exercised too
    starts = range(-t // 4, n, stride)
    kinds: tuple[BlendKind, ...] = ("hann", "spline", "mean")
    for k, (r, c) in enumerate((r, c) for r in starts for c in starts):
        tile = Rect(r, c, t, t)
        logits = rng.standard_normal((_CLASSES, t, t), dtype=np.float32) * 3
        p = np.exp(logits - logits.max(0))
        probs_q = quantize_probs(p / p.sum(0)).astype(np.int32)  # as the runner sends them
        window = weight_window(
            (t, t), kind=kinds[k % 3], overlap=ov, edges=tile_edges(tile, (n, n))
        )
        weights_q = quantize_weights(window, bits)
        accs["cpu"].add(torch.from_numpy(probs_q), torch.from_numpy(weights_q), tile)
        accs["dev"].add(
            torch.from_numpy(probs_q).to(dev), torch.from_numpy(weights_q).to(dev), tile
        )
    # a seam piece from a neighbouring block's accumulator, sent as CPU sums
    piece = Accumulator(Rect(n - t, n - t, 2 * t, 2 * t), _CLASSES)
    piece.add(
        torch.from_numpy(
            quantize_probs(rng.random((_CLASSES, t, t), dtype=np.float32)).astype(np.int32)
        ),
        torch.from_numpy(quantize_weights(np.ones((t, t)), bits)),
        Rect(n - t // 2, n - t // 2, t, t),
    )
    for acc in accs.values():
        acc.add_sums(piece.sums, piece.rect)
    sums_cpu, sums_dev = accs["cpu"].sums, accs["dev"].sums.cpu()
    _expect(torch.equal(sums_cpu, sums_dev), "the int32 sums differ between the device and cpu")
    sub = Rect(n // 3, n // 5, n // 2, n // 3)
    _expect(torch.equal(accs["cpu"].take(sub), accs["dev"].take(sub).cpu()), "take() differs")
    valid = rng.random((n, n)) > 0.02
    cls_c, pr_c = decode(sums_cpu, torch.from_numpy(valid), probabilities=True)
    cls_d, pr_d = decode(accs["dev"].sums, torch.from_numpy(valid).to(dev), probabilities=True)
    _expect(cls_d.device == dev and pr_d.device == dev, "decode did not run on the device")
    _expect(torch.equal(cls_c, cls_d.cpu()), "decoded classes differ between the device and cpu")
    _expect(torch.equal(pr_c, pr_d.cpu()), "decoded probabilities differ")
    cls_n, pr_n = decode(sums_cpu.numpy(), valid, probabilities=True)
    _expect(np.array_equal(cls_n, cls_c.numpy()), "numpy decode differs from torch decode")
    _expect(np.array_equal(pr_n, pr_c.numpy()), "numpy decoded probabilities differ")
    covered = int((sums_cpu[-1] > 0).sum())
    return (
        f"{len(starts) ** 2 + 1} tiles of {t} px into {n}x{n} ({covered} px covered, "
        f"{bits}-bit weights): sums, take, classes and probabilities identical on "
        f"{config.device} and cpu (and numpy)"
    )


def check_predict_repeatable(config: SmokeConfig) -> str:
    """The same run twice, and with another block size and worker count: identical outputs."""
    prec = "bf16" if config.cuda else "fp32"
    b0, b1 = config.sizes.blocks
    first = _predict(config, "fcn", device=config.device, precision=prec, block=b0, workers=2)
    again = _predict(config, "fcn", device=config.device, precision=prec, block=b0, workers=2)
    other = _predict(config, "fcn", device=config.device, precision=prec, block=b1, workers=3)
    n_blocks = (first.sidecar["blocks"]["total"], other.sidecar["blocks"]["total"])
    _expect(n_blocks[0] != n_blocks[1], f"block sizes {b0} and {b1} gave the same blocks")
    for what, run in (("a second run", again), (f"block size {b1}, 3 workers", other)):
        _expect(np.array_equal(first.classes, run.classes), f"classes differ with {what}")
        _expect(np.array_equal(first.probs, run.probs), f"probabilities differ with {what}")
    return (
        f"fcn {prec} on {config.device}: classes and probabilities identical over 3 runs "
        f"({n_blocks[0]} and {n_blocks[1]} blocks; {first.seconds:.1f}s, {again.seconds:.1f}s, "
        f"{other.seconds:.1f}s)"
    )


def check_predict_compile(config: SmokeConfig) -> str:
    """compile=True runs; its warm-up is reported (on CUDA it must not fall back)."""
    prec = "bf16" if config.cuda else "fp32"
    eager = _predict(config, "fcn", device=config.device, precision=prec)
    comp = _predict(config, "fcn", device=config.device, precision=prec, compile=True)
    resolved = comp.sidecar["resolved"]
    warmup = float(resolved["compile_warmup_s"])
    _expect(resolved["compile"] is True, f"the sidecar says compile={resolved['compile']}")
    agree = _agreement(comp.classes, eager.classes)
    if config.cuda:
        failed = [w for w in comp.warnings if "compile" in w]
        _expect(not failed, f"torch.compile fell back: {failed}")
        _expect(warmup > 0, f"no compile warm-up was recorded ({warmup})")
        _expect(agree >= BF16_AGREEMENT, f"compiled and eager classes agree on {agree:.5f}")
    else:
        _expect(warmup == 0.0, f"a compile warm-up of {warmup}s on the cpu")
        _expect(agree == 1.0, f"the eager fallback differs from eager ({agree:.5f})")
    return (
        f"fcn {prec}: resolved.compile_warmup_s {warmup:.1f}, compiled run "
        f"{comp.seconds:.1f}s vs eager {eager.seconds:.1f}s, classes agree on {agree:.5f}"
        + ("" if config.cuda else f" (cpu: eager; warnings {list(comp.warnings)})")
    )


def check_train_steps(config: SmokeConfig) -> str:
    """bf16 training steps on the device: finite and falling loss, finite fp32 weights."""
    import torch

    from geoseg.losses import build_loss
    from geoseg.models import build_model
    from geoseg.schema import IGNORE
    from geoseg.train import adamw_fused, train_step

    dev = torch.device(config.device)
    n, t, steps = config.sizes.train
    torch.manual_seed(0)
    net = build_model(_FCN, in_channels=5, num_classes=_CLASSES).to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, t, t, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # learnable from the input
    y[:, :8] = IGNORE
    x, y = x.to(dev), y.to(dev)
    if config.cuda:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(dev)
    dtypes: set[torch.dtype] = set()
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    loss_fn = build_loss("ce+dice", num_classes=_CLASSES).to(dev)
    fused = adamw_fused(dev, net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=fused)
    net.train()
    t0 = time.perf_counter()
    losses = [
        float(train_step(net, x, y, loss_fn=loss_fn, opt=opt, device=dev).detach())
        for _ in range(steps)
    ]
    dt = time.perf_counter() - t0
    hook.remove()
    want = torch.bfloat16 if config.cuda else torch.float32
    _expect(dtypes == {want}, f"the first convolution ran in {dtypes}, not {want}")
    _expect(all(np.isfinite(losses)), f"non-finite loss: {losses}")
    _expect(losses[-1] < losses[0], f"the loss did not fall on a fixed batch: {losses}")
    params = list(net.parameters())
    _expect(all(p.dtype == torch.float32 for p in params), "weights are not float32")
    _expect(all(bool(torch.isfinite(p).all()) for p in params), "non-finite weights")
    mem = f", max allocated {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB"
    return (
        f"{_FCN} {str(want).removeprefix('torch.')}, batch {n}x{t}px, fused AdamW {fused}: "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps ({steps * n / dt:.1f} "
        f"chips/s incl. warm-up)" + (mem if config.cuda else "")
    )


CHECKS: tuple[tuple[str, Check], ...] = (
    ("blend_device_vs_cpu", check_blend_device_vs_cpu),
    ("predict_tiny_device_vs_cpu", partial(_device_vs_cpu, name="tiny")),
    ("predict_fcn_device_vs_cpu", partial(_device_vs_cpu, name="fcn")),
    ("predict_repeatable", check_predict_repeatable),
    ("predict_compile", check_predict_compile),
    ("train_steps", check_train_steps),
)
"""Every check, in the order they run."""


# -- the command -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m geoseg.bench.device",
        description="Smoke test of geoseg's prediction and training on a device against the CPU.",
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a dry run).")
    p.add_argument("--small", action="store_true", help="Small sizes (a quick CPU run).")
    p.add_argument(
        "--only",
        action="append",
        choices=[name for name, _ in CHECKS],
        help="Run only this check (repeatable).",
    )
    p.add_argument("--workdir", type=Path, help="Keep scenes and outputs here (default: temp).")
    p.add_argument("--json", type=Path, help="Also write the results to this JSON file.")
    return p


def _environment(device: str) -> str:
    import torch

    line = f"torch {torch.__version__}, device {device}"
    if device.startswith("cuda"):
        prop = torch.cuda.get_device_properties(device)
        line += (
            f" ({prop.name}, cc {prop.major}.{prop.minor}, {prop.total_memory / 2**30:.0f} GiB, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
        )
    return line


def main(argv: Sequence[str] | None = None, *, stream: TextIO | None = None) -> int:
    """Run the smoke test; returns the exit code (0: every check passed).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
        stream: Where the lines go (default: standard output).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
    out = sys.stdout if stream is None else stream
    args = _parser().parse_args(argv)
    from geoseg._torch import resolve_device
    from geoseg.errors import ConfigError

    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        out.write(f"Error: {exc}\n")
        return 2
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="geoseg-smoke-")) if own else Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checks = [(n, c) for n, c in CHECKS if not args.only or n in args.only]
    config = SmokeConfig(device=device, small=args.small, workdir=workdir)
    out.write(f"geoseg device smoke: {_environment(device)}, sizes {config.sizes}\n")
    try:
        results = run_checks(checks, config, stream=out)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
