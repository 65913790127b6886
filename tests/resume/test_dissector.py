"""tshark dissects our messages as IKEv2 (the reason for RFC 7296 framing).

Writes the vector run into a pcap (raw IPv4/UDP 500) and asks tshark for the ISAKMP fields.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

from tests.conftest import require

VECTOR = Path(__file__).resolve().parents[2] / "specs" / "vectors" / "hardened-x25519.json"


def _ip_udp(payload: bytes, src: str, dst: str) -> bytes:
    udp = struct.pack(">HHHH", 500, 500, 8 + len(payload), 0) + payload
    hdr = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        bytes(map(int, src.split("."))),
        bytes(map(int, dst.split("."))),
    )
    s = sum(struct.unpack(">10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return hdr[:10] + struct.pack(">H", ~s & 0xFFFF) + hdr[12:] + udp


def test_tshark_dissects_every_message(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    require(tshark is not None, "tshark")
    assert tshark is not None
    v = json.loads(VECTOR.read_text())[0]
    msgs = [bytes.fromhex(v["messages"][k]) for k in ("msg1", "msg2", "msg3", "nack1")]
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW
    for i, m in enumerate(msgs):
        src, dst = ("198.51.100.7", "192.0.2.1") if i in (0, 2) else ("192.0.2.1", "198.51.100.7")
        d = _ip_udp(m, src, dst)
        pcap += struct.pack("<IIII", 1000 + i, 0, len(d), len(d)) + d
    path = tmp_path / "resume.pcap"
    path.write_bytes(pcap)
    fields = ["exchangetype", "ispi", "rspi", "messageid", "length", "typepayload"]
    fields += ["notify.msgtype", "key_exchange.dh_group"]
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f"isakmp.{f}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("|") for line in out.strip().splitlines()]
    assert len(rows) == 4
    spi_i = msgs[0][:8].hex()
    spi_r = msgs[1][8:16].hex()
    assert rows[0] == ["240", spi_i, "0" * 16, "0x00000000", "140", "240,241,40,34", "", "31"]
    assert rows[1][:5] == ["240", spi_i, spi_r, "0x00000000", str(len(msgs[1]))]
    assert rows[1][5] == "241,40,34,242"
    assert rows[2][3:6] == ["0x00000001", str(len(msgs[2])), "243,242"]
    assert rows[3][5:7] == ["41", "8240"]
