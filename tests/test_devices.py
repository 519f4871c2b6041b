"""One GPU per Dask worker: which device each worker gets (stub probes, no cluster)."""

from __future__ import annotations

import pytest

from geoseg._dask import WorkerProbe, assign_devices
from geoseg.errors import ConfigError


def _probe(address: str, host: str = "a", cuda: int = 0, visible: str | None = None) -> WorkerProbe:
    return WorkerProbe(address=address, host=host, cuda_devices=cuda, visible=visible)


def test_cpu_puts_every_worker_on_its_cpu_even_with_gpus() -> None:
    probes = [_probe("tcp://a:1", cuda=2), _probe("tcp://b:1", host="b")]
    assert assign_devices(probes, "cpu") == {"tcp://a:1": "cpu", "tcp://b:1": "cpu"}


def test_cuda_spreads_the_workers_of_each_host_over_its_gpus_in_address_order() -> None:
    probes = [
        _probe("tcp://10.0.0.1:10", cuda=2),  # port 10 after port 9: numbers compare as numbers
        _probe("tcp://10.0.0.1:9", cuda=2),
        _probe("tcp://10.0.0.1:11", cuda=2),
        _probe("tcp://10.0.0.2:5", host="b", cuda=4),
        _probe("tcp://10.0.0.2:6", host="b", cuda=4),
    ]
    got = assign_devices(reversed(probes), "cuda")
    assert got == {
        "tcp://10.0.0.1:9": "cuda:0",
        "tcp://10.0.0.1:10": "cuda:1",
        "tcp://10.0.0.1:11": "cuda:0",
        "tcp://10.0.0.2:5": "cuda:0",
        "tcp://10.0.0.2:6": "cuda:1",
    }
    assert list(got) == [p.address for p in (probes[1], probes[0], *probes[2:])]


def test_a_worker_pinned_to_one_gpu_gets_cuda_0() -> None:
    # CUDA_VISIBLE_DEVICES=i dask worker ...: each sees one device, its own GPU i
    probes = [_probe(f"tcp://a:{i}", cuda=1, visible=str(i)) for i in range(1, 4)]
    assert set(assign_devices(probes, "cuda").values()) == {"cuda:0"}
    assert set(assign_devices(probes, "auto").values()) == {"cuda:0"}


def test_workers_sharing_a_set_of_gpus_share_it_out_apart_from_pinned_ones() -> None:
    probes = [
        _probe("tcp://a:1", cuda=1, visible="3"),
        _probe("tcp://a:2", cuda=2, visible="0,1"),
        _probe("tcp://a:3", cuda=2, visible="0,1"),
    ]
    assert assign_devices(probes, "cuda") == {
        "tcp://a:1": "cuda:0",
        "tcp://a:2": "cuda:0",
        "tcp://a:3": "cuda:1",
    }


def test_cuda_n_puts_every_worker_on_device_n() -> None:
    probes = [_probe("tcp://a:1", cuda=2), _probe("tcp://b:1", host="b", cuda=4)]
    assert assign_devices(probes, "cuda:1") == {"tcp://a:1": "cuda:1", "tcp://b:1": "cuda:1"}
    assert assign_devices(probes, "cuda:01") == {"tcp://a:1": "cuda:1", "tcp://b:1": "cuda:1"}


def test_cuda_n_refuses_a_worker_without_device_n() -> None:
    probes = [
        _probe("tcp://a:1", cuda=4),
        _probe("tcp://b:1", host="b", cuda=1, visible="2"),
        _probe("tcp://c:1", host="c"),
    ]
    with pytest.raises(ConfigError) as err:
        assign_devices(probes, "cuda:1")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("--device cuda:1: workers tcp://b:1 (b), tcp://c:1 (c) see fewer than 2")
    assert "CUDA_VISIBLE_DEVICES numbers" in msg and "use --device cuda" in msg
    assert "tcp://a:1" not in msg
    assert assign_devices(probes[:1], "cuda:3") == {"tcp://a:1": "cuda:3"}


def test_cuda_refuses_workers_without_a_gpu_even_when_mixing_is_allowed() -> None:
    probes = [_probe("tcp://a:1", cuda=1), _probe("tcp://b:1", host="b")]
    for allow in (False, True):
        with pytest.raises(ConfigError, match=r"^--device cuda: worker tcp://b:1 \(b\) has no"):
            assign_devices(probes, "cuda", allow_mixed=allow)


def test_auto_uses_the_gpus_where_every_worker_has_one_and_cpus_where_none_has() -> None:
    gpus = [_probe("tcp://a:1", cuda=2), _probe("tcp://a:2", cuda=2), _probe("tcp://a:3", cuda=2)]
    assert list(assign_devices(gpus, "auto").values()) == ["cuda:0", "cuda:1", "cuda:0"]
    cpus = [_probe("tcp://a:1"), _probe("tcp://b:1", host="b")]
    assert assign_devices(cpus, "auto") == {"tcp://a:1": "cpu", "tcp://b:1": "cpu"}


def test_auto_refuses_to_mix_cpu_and_gpu_workers_unless_allowed() -> None:
    probes = [_probe(f"tcp://c:{i}", host="c") for i in range(1, 6)]
    probes.append(_probe("tcp://g:1", host="g", cuda=1))
    with pytest.raises(ConfigError) as err:
        assign_devices(probes, "auto")
    msg = str(err.value)
    assert "\n" not in msg
    assert "workers tcp://c:1 (c), tcp://c:2 (c), tcp://c:3 (c) and 2 more have no CUDA" in msg
    assert "--device cpu" in msg and "GPU workers only" in msg and "--allow-mixed-devices" in msg
    got = assign_devices(probes, "auto", allow_mixed=True)
    assert got["tcp://g:1"] == "cuda:0"
    assert [got[f"tcp://c:{i}"] for i in range(1, 6)] == ["cpu"] * 5


def test_no_worker_gives_no_assignment_and_a_bad_device_is_refused() -> None:
    assert assign_devices([], "cuda") == {}
    for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:0\n"):
        with pytest.raises(ConfigError, match="use one of auto, cpu, cuda, cuda:N"):
            assign_devices([_probe("tcp://a:1", cuda=1)], bad)
