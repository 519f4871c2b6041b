"""The one way to get a Dask client: local threads, an address, or a given client."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from geoseg._dask import WorkerProbe, assign_devices, dask_client, probe_workers
from geoseg.errors import InputError


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_local_cluster_never_claims_the_dashboard_port() -> None:
    busy = _listening(8787)  # someone else's dashboard: ours must not be it either
    with dask_client(None, workers=2) as client:
        assert sum(client.nthreads().values()) == 2
        assert client.run_on_scheduler(lambda: 1) == 1
        services = client.scheduler_info().get("services", {})
        assert services.get("dashboard") != 8787
        if not busy:
            assert not _listening(8787)
        # A client given to the helper is yielded as is and left open.
        with dask_client(client, workers=1) as same:
            assert same is client
        assert client.status == "running"


def test_quiet_local_cluster_restores_the_distributed_log_level() -> None:
    dlog = logging.getLogger("distributed")
    before = dlog.level
    with dask_client(None, workers=1, quiet=True):
        assert dlog.getEffectiveLevel() >= logging.WARNING
    assert dlog.level == before


def test_unreachable_scheduler_is_a_clean_input_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        pytest.raises(
            InputError, match=rf"cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:{port}"
        ),
        dask_client(f"tcp://127.0.0.1:{port}", workers=1, timeout=1),
    ):
        pass


def test_probe_workers_asks_every_worker_what_it_sees() -> None:
    import torch
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            processes=False,
            n_workers=2,
            threads_per_worker=1,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # never port 8787
        ) as cluster,
        Client(cluster) as client,
    ):
        probes = probe_workers(client)
        addresses = set(client.scheduler_info()["workers"])
    assert len(probes) == 2 and {p.address for p in probes} == addresses
    assert probes[0].address != probes[1].address
    for p in probes:  # in-process workers: they see what this process sees
        assert isinstance(p, WorkerProbe)
        assert p.host == socket.gethostname()
        assert p.cuda_devices == torch.cuda.device_count()
        assert p.visible == os.environ.get("CUDA_VISIBLE_DEVICES")
        if not torch.cuda.is_available():
            assert p.cuda_devices == 0
    if not torch.cuda.is_available():
        assert set(assign_devices(probes, "auto").values()) == {"cpu"}
