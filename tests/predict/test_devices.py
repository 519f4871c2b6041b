"""Devices of a prediction: --compile falls back clearly off CUDA; a cluster never mixes devices."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg._dask import WorkerProbe
from geoseg.errors import ConfigError
from geoseg.predict import predict_scenes
from tests.predict.helpers import opts, random_scene, read, three_conv_model


@contextlib.contextmanager
def local_client(workers: int) -> Iterator[Any]:
    """An in-process Dask cluster of ``workers`` one-thread workers, and its client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            processes=False,
            n_workers=workers,
            threads_per_worker=1,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_compile_off_cuda_warns_runs_eagerly_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = random_scene(tmp_path, 90, 110, seed=3)
    model = three_conv_model()
    plain = predict_scenes([spec], model, tmp_path / "plain", options=opts(probabilities=True))[0]
    with caplog.at_level(logging.WARNING):
        comp = predict_scenes(
            [spec], model, tmp_path / "comp", options=opts(probabilities=True, compile=True)
        )[0]
    assert any("torch.compile is only used on CUDA" in r.getMessage() for r in caplog.records)
    assert np.array_equal(read(comp.classes), read(plain.classes))
    assert np.array_equal(read(comp.probabilities), read(plain.probabilities))  # type: ignore[arg-type]
    side = json.loads(comp.sidecar.read_text())
    assert side["resolved"]["compile"] is True
    assert side["resolved"]["compile_warmup_s"] == 0.0  # nothing was compiled


def test_a_cluster_runs_each_worker_on_its_assigned_device(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 90, 110, seed=5)
    with local_client(workers=2) as client:
        (rep,) = predict_scenes(
            [spec], three_conv_model(), tmp_path / "out", options=opts(device="auto"), client=client
        )
    side = json.loads(rep.sidecar.read_text())
    assert side["resolved"]["devices"] == ["cpu"]  # auto on GPU-less workers: all on the CPU
    (local,) = predict_scenes([spec], three_conv_model(), tmp_path / "local", options=opts())
    assert np.array_equal(read(rep.classes), read(local.classes))


def test_a_cluster_that_would_mix_cpu_and_gpu_workers_is_refused_before_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoseg.predict._driver as driver

    def mixed(client: object) -> list[WorkerProbe]:
        return [
            WorkerProbe(address="tcp://10.0.0.1:4001", host="a", cuda_devices=2, visible=None),
            WorkerProbe(address="tcp://10.0.0.2:4001", host="b", cuda_devices=0, visible=None),
        ]

    monkeypatch.setattr(driver, "probe_workers", mixed)
    spec = random_scene(tmp_path, 60, 60, seed=6)
    out = tmp_path / "out"
    with local_client(workers=1) as client:
        with pytest.raises(ConfigError, match="10.0.0.2"):
            predict_scenes(
                [spec], three_conv_model(), out, options=opts(device="auto"), client=client
            )
    assert not out.exists() or not any(out.iterdir())


def test_a_failed_compile_falls_back_to_the_eager_model_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoseg.predict._runner as runner_mod

    def failing_compile(module: object, device: object, warn: object) -> object:
        def compiled(x: object) -> object:
            raise RuntimeError("inductor: no working C compiler")

        return compiled

    monkeypatch.setattr(runner_mod, "compile_module", failing_compile)
    spec = random_scene(tmp_path, 80, 90, seed=7)
    model = three_conv_model(sha256="c" * 64)  # its own runner: not one cached by another test
    (rep,) = predict_scenes([spec], model, tmp_path / "out", options=opts(compile=True))
    (plain,) = predict_scenes([spec], three_conv_model(), tmp_path / "plain", options=opts())
    assert np.array_equal(read(rep.classes), read(plain.classes))
    side = json.loads(rep.sidecar.read_text())
    assert any("torch.compile failed" in w for w in side["warnings"])
    assert any("torch.compile failed" in w for w in rep.warnings)
    assert side["resolved"]["compile_warmup_s"] > 0  # the failed attempt was timed
