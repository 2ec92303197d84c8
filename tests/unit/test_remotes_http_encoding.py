"""remotes.http: response bodies are never content-decoded (a Content-Encoding bomb from a
registry or token server stays as the few KiB it was sent as)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest
import zstandard

from pycontainerd.remotes.hosts import Endpoint
from pycontainerd.remotes.http import RegistryHTTP

MiB = 1 << 20


def _zstd_zeros(size: int) -> bytes:
    c = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = bytes(4 * MiB)
    return b"".join([c.compress(chunk) for _ in range(size // len(chunk))] + [c.flush()])


BOMB = _zstd_zeros(1 << 30)


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        _Handler.seen.append(self.headers.get("Accept-Encoding", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "zstd")
        self.send_header("Content-Length", str(len(BOMB)))
        self.end_headers()
        self.wfile.write(BOMB)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def test_encoded_bodies_stay_encoded(server: str) -> None:
    _Handler.seen.clear()

    async def main() -> tuple[int, int]:
        http_ = RegistryHTTP(retries=1)
        try:
            ep = Endpoint("http", server)
            resp = await http_.request(ep, "GET", "/bomb")
            streamed = 0
            async with http_.stream(ep, "GET", "/bomb") as s:
                async for chunk in s.aiter_bytes():
                    streamed += len(chunk)
            return len(resp.content), streamed
        finally:
            await http_.aclose()

    read, streamed = asyncio.run(main())
    assert read == len(BOMB) and streamed == len(BOMB)  # not 1 GiB
    assert _Handler.seen == ["identity", "identity"]
