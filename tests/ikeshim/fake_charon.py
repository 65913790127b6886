"""A VICI endpoint on a Unix socket that plays scripted events, for the harvest loop's tests.

It speaks the real wire protocol (the ``vici`` package's ``Transport``, ``Packet`` and
``Message`` encode every byte): event registration is confirmed, ``list-sas`` is answered
with ``list-sa`` events and a command response, and each listening connection gets the
next script of events.  A script entry may be raw bytes: the event payload as sent, to
garble the stream the way a broken daemon would.  Why a fake: strongSwan never reports a
non-IP host or a 33-bit SPI, and the loop must survive them all the same.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from vici.protocol import Message, Packet, Transport

Script = list[tuple[str, dict[str, Any] | bytes]]


def event_packet(name: str, msg: dict[str, Any] | bytes) -> bytes:
    body = msg if isinstance(msg, bytes) else Message.serialize(msg)
    return struct.pack("!BB", Packet.EVENT, len(name)) + name.encode() + body


class FakeCharon:
    def __init__(self, path: Path, scripts: list[Script], listens_for: int = 3) -> None:
        self.path = path
        self.scripts = list(scripts)
        self.listens_for = listens_for
        self.listeners = 0  # connections that registered for events
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._closed = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        tr = Transport(conn)
        registered = 0
        try:
            while True:
                pkt = Packet.parse(tr.receive())
                kind = pkt.response_type
                if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                    tr.send(struct.pack("!B", Packet.EVENT_CONFIRM))
                    if kind == Packet.EVENT_REGISTER:
                        registered += 1
                    if registered == self.listens_for and kind == Packet.EVENT_REGISTER:
                        self.listeners += 1
                        script = self.scripts.pop(0) if self.scripts else []
                        for name, msg in script:
                            tr.send(event_packet(name, msg))
                elif kind == Packet.CMD_REQUEST:  # list-sas: nothing installed
                    tr.send(struct.pack("!B", Packet.CMD_RESPONSE) + Message.serialize({}))
        except (OSError, struct.error):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
