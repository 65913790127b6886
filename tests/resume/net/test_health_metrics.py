"""HTTP endpoints and the Prometheus text exposition."""

from __future__ import annotations

import trio

from resume.net.health import HealthServer
from resume.net.metrics import Counter, Histogram, ServerMetrics


async def _get(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        buf = b""
        while chunk := await stream.receive_some(65536):
            buf += chunk
        return buf


async def test_routes(nursery: trio.Nursery) -> None:
    ready = {"ok": False}

    def readyz() -> tuple[int, str, str]:
        return (200, "text/plain", "ready\n") if ready["ok"] else (503, "text/plain", "draining\n")

    srv = HealthServer("127.0.0.1:0", {"/readyz": readyz})
    port = await nursery.start(srv.serve)
    assert (await _get(port, b"GET /readyz HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 503")
    ready["ok"] = True
    resp = await _get(port, b"GET /readyz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert resp.startswith(b"HTTP/1.0 200") and resp.endswith(b"ready\n")
    assert (await _get(port, b"GET /nope HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 404")
    assert (await _get(port, b"POST /readyz HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 405")
    assert (await _get(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.0 400")
    assert (await _get(port, b"A" * 10000)).startswith(b"HTTP/1.0 400")


def test_prometheus_text() -> None:
    c = Counter("x_total", "things", ["reason"])
    c.inc("a")
    c.inc("a")
    c.inc('we"ird\n')
    text = c.render()
    assert "# TYPE x_total counter" in text
    assert 'x_total{reason="a"} 2' in text
    assert 'x_total{reason="we\\"ird\\n"} 1' in text
    h = Histogram("lat_seconds", "latency", [0.001, 0.01])
    for v in (0.0005, 0.002, 0.002, 5.0):
        h.observe(v)
    t = h.render()
    assert 'lat_seconds_bucket{le="0.001"} 1' in t
    assert 'lat_seconds_bucket{le="0.01"} 3' in t
    assert 'lat_seconds_bucket{le="+Inf"} 4' in t
    assert "lat_seconds_count 4" in t
    assert h.quantile(0.5) == 0.01


def test_server_metrics_render_all() -> None:
    m = ServerMetrics()
    m.drops.inc("garbage")
    m.exchanges.inc("ok")
    out = m.render()
    for name in (
        "ikeresume_drops_total",
        "ikeresume_exchanges_total",
        "ikeresume_queue_depth",
        "ikeresume_exchange_seconds_bucket",
        "ikeresume_cache_lookups_total",
    ):
        assert name in out
