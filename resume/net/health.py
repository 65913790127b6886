"""Tiny HTTP/1.0 endpoints for operators: ``/metrics``, ``/healthz``, ``/readyz``.

Why not an HTTP framework: three GET routes on a management address do not justify a
dependency in a security daemon, and a hand-written server can be strict and bounded
(request head at most 8 KiB, 5 s to send it, one request per connection).

* ``/healthz`` -- 200 while the event loop runs (a wedged loop cannot answer at all);
* ``/readyz``  -- 200 only when the UDP listeners are bound, the store answered and the
  service is not draining; load balancers stop sending new peers on 503;
* ``/metrics`` -- Prometheus text format 0.0.4.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from resume.net.config import parse_hostport

MAX_HEAD = 8192
READ_TIMEOUT = 5.0

Route = Callable[[], tuple[int, str, str]]  # -> (status, content type, body)
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


class HealthServer:
    """Serves the routes on one TCP listener until cancelled."""

    def __init__(self, listen: str, routes: dict[str, Route]) -> None:
        addr = parse_hostport(listen, 9751)
        self.host, self.port = addr.host, addr.port
        self.routes = routes
        self.bound_port: int | None = None

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.bound_port = listeners[0].socket.getsockname()[1]
        task_status.started(self.bound_port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(READ_TIMEOUT):
                    head = await self._read_head(stream)
                status, ctype, body = self._respond(head)
                payload = body.encode()
                reply = (
                    f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode() + payload
                with trio.fail_after(READ_TIMEOUT):
                    await stream.send_all(reply)
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    @staticmethod
    async def _read_head(stream: trio.SocketStream) -> bytes | None:
        buf = b""
        while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_HEAD:
                return None
        return buf

    def _respond(self, head: bytes | None) -> tuple[int, str, str]:
        text = "text/plain; charset=utf-8"
        if not head:
            return 400, text, "bad request\n"
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) < 2:
            return 400, text, "bad request\n"
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, text, "only GET\n"
        route = self.routes.get(target)
        if route is None:
            return 404, text, "not found\n"
        return route()
