"""A small HTTP server on the loopback address with range requests, counting bytes served.

It runs in its own process (``python -m tests.raster.http_helpers ROOT``): GDAL holds the
GIL while it opens a dataset, so a server thread in the test's process could not answer.
``GET /_stats`` gives the bytes served per file and the requests, as JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest


class RangeServer(ThreadingHTTPServer):
    """Serves the files of ``root``; ``served[name]`` counts the body bytes sent per file."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.served: dict[str, int] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        """The http URL of ``root / name``."""
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer

    def do_HEAD(self) -> None:
        self._send(head=True)

    def do_GET(self) -> None:
        self._send(head=False)

    def _send(self, *, head: bool) -> None:
        name = unquote(urlsplit(self.path).path).lstrip("/")
        if name == "_stats":
            with self.server.lock:
                stats = {"served": self.server.served, "requests": self.server.requests}
            body = json.dumps(stats).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = self.server.root / name
        if not name or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m:
            a = int(m.group(1))
            b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if a >= len(data):
                self.send_error(416)
                return
            body = data[a : b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with self.server.lock:
            self.server.requests.append(f"{self.command} {name} {self.headers.get('Range')}")
            if not head:
                self.server.served[name] = self.server.served.get(name, 0) + len(body)
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Served:
    """The client side of a server process: URLs and what it served."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port

    def url(self, name: str) -> str:
        """The http URL of ``root / name``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def stats(self) -> dict[str, object]:
        """``{"served": {name: bytes}, "requests": [...]}`` so far."""
        with urllib.request.urlopen(self.url("_stats"), timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def served(self, name: str) -> int:
        """Body bytes sent for ``name`` so far."""
        served = self.stats()["served"]
        assert isinstance(served, dict)
        return int(served.get(name, 0))


@contextmanager
def serving(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """Serve ``root`` on 127.0.0.1 (proxies bypassed for the loopback) until the block ends."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.raster.http_helpers", str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield Served(root, port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    server = RangeServer(Path(sys.argv[1]))
    print(server.server_address[1], flush=True)
    server.serve_forever()
