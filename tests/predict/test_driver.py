"""The driver: outputs checked before work, GSD warnings, real data, a Dask cluster."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geoseg.checkpoint import file_sha256
from geoseg.errors import OutputExistsError
from geoseg.predict import PredictModel, output_paths, predict_scenes
from geoseg.raster import SceneSpec
from geoseg.schema import IGNORE, ClassSchema
from tests.conftest import real_data
from tests.predict.helpers import (
    RGB,
    opts,
    random_scene,
    read,
    save_tiny_checkpoint,
    square_scene,
    threshold_model,
)


def test_existing_outputs_refused_before_any_work(tmp_path: Path) -> None:
    spec = square_scene(tmp_path, 40, 40, slice(0, 5), slice(0, 5))
    out = tmp_path / "out"
    paths = output_paths(out, spec.id)
    out.mkdir()
    paths["classes"].write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        predict_scenes([spec], threshold_model(), out, options=opts())
    assert paths["classes"].read_bytes() == b"precious"
    assert not paths["work"].exists() and not paths["sidecar"].exists()
    (rep,) = predict_scenes([spec], threshold_model(), out, options=opts(overwrite=True))
    assert read(rep.classes)[0, 0, 0] == 1


def test_gsd_far_from_the_checkpoint_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = square_scene(tmp_path, 40, 40, slice(0, 5), slice(0, 5))
    with caplog.at_level(logging.WARNING, logger="geoseg.predict"):
        (rep,) = predict_scenes([spec], threshold_model(gsd=0.09), tmp_path / "o", options=opts())
    assert rep.warnings and "ground sample distance" in rep.warnings[0]
    assert any("ground sample distance" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg.predict"):
        (rep,) = predict_scenes([spec], threshold_model(gsd=0.06), tmp_path / "p", options=opts())
    assert not rep.warnings and not caplog.records


def test_real_landsat_collar_is_nodata_and_classes_elsewhere(tmp_path: Path) -> None:
    src = real_data("rasterio_landsat7_rgb", "RGB.byte.tif")
    with rasterio.open(src) as ds:
        img = ds.read().astype(np.float32)
        mask = ds.dataset_mask() > 0
        res = ds.res[0]
    # Brightness classes (dark / medium / bright) from the valid pixels' terciles.
    bright = img.mean(axis=0)
    t1, t2 = np.quantile(bright[mask], [1 / 3, 2 / 3])
    labels = np.digitize(bright, [t1, t2])
    mean = tuple(float(v) for v in img[:, mask].mean(axis=1))
    std = tuple(float(v) for v in img[:, mask].std(axis=1))
    x = torch.from_numpy(
        ((img[:, mask] - np.array(mean)[:, None]) / np.array(std)[:, None]).T
    ).float()
    y = torch.from_numpy(labels[mask]).long()
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 1)
    optim = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        idx = torch.randint(0, len(y), (4096,))
        logits = net(x[idx][:, :, None, None])[:, :, 0, 0]
        loss = nn.functional.cross_entropy(logits, y[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    schema = ClassSchema(
        "brightness", ("dark", "medium", "bright"), ((0, 0, 0), (128, 128, 128), (255, 255, 255))
    )
    model = PredictModel(
        module=net, bands=RGB, mean=mean, std=std, schema=schema, tile_size=256, gsd=res, name="b"
    )
    spec = SceneSpec(id="landsat", image=src)
    (rep,) = predict_scenes(
        [spec], model, tmp_path / "out", options=opts(tile_size=256, overlap=64)
    )
    cls = read(rep.classes)[0]
    assert np.array_equal(cls == IGNORE, ~mask)  # nodata exactly on the collar
    assert set(np.unique(cls[mask])) == {0, 1, 2}
    assert (cls[mask] == labels[mask]).mean() > 0.9


@pytest.mark.slow  # ~25 s: two worker processes start, import torch and load the model
def test_local_cluster_with_two_worker_processes_matches_local_run(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    specs = [random_scene(tmp_path, 130, 150, seed=s) for s in (1, 2)]
    options = opts(block_size=48, probabilities=True)
    local = predict_scenes(specs, ckpt, tmp_path / "local", options=options)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        # Dask starts workers with OMP_NUM_THREADS=1, and the last bits of a convolution
        # depend on torch's thread count: give the workers this process's count.
        client.run(torch.set_num_threads, torch.get_num_threads())
        # As `--scheduler tcp://...` does: predict_scenes connects by address.
        remote = predict_scenes(
            specs, ckpt, tmp_path / "cluster", options=options, client=cluster.scheduler_address
        )

        def runners() -> list[str]:
            from geoseg.predict import _registry

            return [key[0] for key in _registry._RUNNERS]

        # Each worker process loaded the model once, into its own runner.
        loaded = client.run(runners)
        assert list(loaded.values()) == [[file_sha256(ckpt)]] * 2
    for a, b in zip(local, remote, strict=True):
        assert a.probabilities is not None and b.probabilities is not None
        assert np.array_equal(read(a.classes), read(b.classes))
        assert np.array_equal(read(a.probabilities), read(b.probabilities))
