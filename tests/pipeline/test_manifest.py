from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from geoseg.errors import InputError
from geoseg.pipeline import LOCK_NAME, MANIFEST_NAME, Manifest, RunLock, RunLockedError
from geoseg.pipeline._manifest import sha256_file, versions


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(root: Path, **info: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    path.write_text(json.dumps(info))
    return path


def _me(**changes: object) -> dict[str, object]:
    info: dict[str, object] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": "2026-01-01T00:00:00+00:00",
        "create_time": psutil.Process().create_time(),
        "boot_time": psutil.boot_time(),
        "token": "x",
    }
    info.update(changes)
    return info


def test_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    root = tmp_path / "out"
    with RunLock(root) as lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(RunLockedError) as exc:
            RunLock(root).acquire()
        msg = str(exc.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in msg
        assert "still running" in msg and "\n" not in msg
    assert not (root / LOCK_NAME).exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    _write_lock(tmp_path, **_me(pid=_dead_pid(), create_time=1.0))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_lock_of_a_reused_pid_is_stale(tmp_path: Path) -> None:
    # A live pid whose process started at another time: the pid was reused.
    created = psutil.Process().create_time() - 1000.0
    _write_lock(tmp_path, **_me(create_time=created))
    with RunLock(tmp_path):
        pass


def test_lock_of_a_live_process_is_kept(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, **_me())
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()
    assert json.loads(path.read_text())["token"] == "x"


def test_lock_of_another_host_is_never_broken(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, **_me(pid=_dead_pid(), host="elsewhere.example"))
    with pytest.raises(RunLockedError, match="it is on another host"):
        RunLock(tmp_path).acquire()
    assert path.exists()


def test_lock_from_before_a_reboot_is_stale(tmp_path: Path) -> None:
    _write_lock(tmp_path, **_me(boot_time=psutil.boot_time() - 86400.0))
    with RunLock(tmp_path):
        pass


def test_empty_lock_is_stale_only_when_old(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_bytes(b"")
    with pytest.raises(RunLockedError, match="starting"):
        RunLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    with RunLock(tmp_path):
        pass


def test_release_leaves_a_lock_that_is_not_ours(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    lock.acquire()
    _write_lock(tmp_path, **_me(token="someone else"))
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def test_manifest_round_trip_and_atomic_save(tmp_path: Path) -> None:
    m = Manifest.load(tmp_path / "out")
    assert m.step("a", "predict") == {}
    m.update_step("a", "predict", status="running", started="t0")
    m.update_step("a", "predict", status="done", outputs=[{"name": "x"}])
    m.update_scene("a", status="done")
    again = Manifest.load(tmp_path / "out")
    assert again.step("a", "predict") == {
        "status": "done",
        "started": "t0",
        "outputs": [{"name": "x"}],
    }
    assert again.scene("a")["status"] == "done"
    m.update_step("a", "predict", replace=True, status="running")
    assert Manifest.load(tmp_path / "out").step("a", "predict") == {"status": "running"}
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name != MANIFEST_NAME]
    assert leftovers == []


def test_manifest_refuses_foreign_or_broken_files(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a geoseg run manifest"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"format": ')
    with pytest.raises(InputError, match="unreadable run manifest"):
        Manifest.load(tmp_path)


def test_input_checksums_are_cached_by_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "img.tif"
    f.write_bytes(b"a" * 100)
    m = Manifest.load(tmp_path / "out")
    first = m.input_sha256(f)
    assert first == sha256_file(f)
    st = f.stat()
    f.write_bytes(b"b" * 100)  # same size, same mtime: the cache answers
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert m.input_sha256(f) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert m.input_sha256(f) == sha256_file(f) != first
    with pytest.raises(InputError, match="not found"):
        m.input_sha256(tmp_path / "gone.tif")


def test_versions_name_the_libraries_that_shape_outputs() -> None:
    import rasterio
    import torch

    v = versions()
    assert v["torch"] == torch.__version__
    assert v["rasterio"] == rasterio.__version__
    assert v["gdal"] == rasterio.__gdal_version__
    assert v["geoseg"]
