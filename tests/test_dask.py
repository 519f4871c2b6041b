"""The one way to get a Dask client: local threads, an address, or a given client."""

from __future__ import annotations

import logging
import socket

import pytest

from geoseg._dask import dask_client
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
