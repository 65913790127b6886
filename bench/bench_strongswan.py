"""Baseline: strongSwan's responder CPU per full IKEv2 handshake (childless IKE_SA).

Why this exists: every resumption figure we publish is a ratio against what a real gateway
pays for a full IKEv2 exchange on the same machine in the same run.  Two Debian strongSwan
``charon`` processes run in a private network namespace and talk over its loopback (the host
kernel has no ESP, so the IKE_SAs are childless: ``childless = force``).  The responder's CPU
is read from ``/proc/PID/task/*/schedstat`` (nanoseconds on CPU, all threads) before and
after N sequential handshakes, so it counts exactly the work charon's responder does:
IKE_SA_INIT (DH), IKE_AUTH (PSK MAC or RSA signature + certificate verification), logging
at level 0, and its own thread hand-offs.

Suites: ``psk-x25519`` (aes256gcm16-prfsha256-x25519, PSK) and ``rsa-modp2048``
(aes256-sha256-modp2048, RSA-2048 certificates signed by a test CA); with a newer
strongSwan (``--root DIR``, below) also the post-quantum ones: ``psk-x25519-mlkem768``
(aes256gcm16-prfsha256-x25519-ke1_mlkem768: X25519 in IKE_SA_INIT, ML-KEM-768 as an RFC
9370 additional key exchange in IKE_INTERMEDIATE) and ``psk-mlkem768`` (ML-KEM-768 alone in
IKE_SA_INIT).

Bytes and round trips: the namespace carries nothing but the handshakes, so the loopback
interface's counters (``ip -s link``: each datagram is counted once, with its 28-byte IPv4
and UDP headers) give the UDP payload bytes and the datagrams per handshake exactly.

A newer strongSwan: Debian bookworm's 5.9.8 has no ML-KEM.  ``--root DIR`` runs each charon
chrooted into a Debian unstable root (strongSwan 6.1.0, OpenSSL 3.6) made by::

    debootstrap --variant=minbase --include=strongswan-charon,strongswan-swanctl,\
        libstrongswan-extra-plugins,libcharon-extra-plugins,iproute2 sid DIR

inside the benchmark's private network namespace and a private mount namespace of its own
(DIR/dev, DIR/proc, DIR/run and the scratch directory on DIR/mnt are mounted there only;
nothing outside the namespaces changes).

Use as a module (``bench_server.py`` does) -- :func:`measure_strongswan` returns a
:class:`StrongswanResult` with ``us_per_handshake`` -- or run it::

    python bench/bench_strongswan.py --handshakes 500 --json bench/results/strongswan.json

Needs root (network namespaces) and strongSwan; it never touches the host's network.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib import cpu_model

CHARON = "/usr/lib/ipsec/charon"
SUITES = ("psk-x25519", "rsa-modp2048", "psk-x25519-mlkem768", "psk-mlkem768")
#: the suites a strongSwan without ML-KEM (bookworm's 5.9.8) runs
CLASSICAL_SUITES = ("psk-x25519", "rsa-modp2048")
_PROPOSALS = {
    "psk-x25519": "aes256gcm16-prfsha256-x25519",
    "rsa-modp2048": "aes256-sha256-modp2048",
    "psk-x25519-mlkem768": "aes256gcm16-prfsha256-x25519-ke1_mlkem768",
    "psk-mlkem768": "aes256gcm16-prfsha256-mlkem768",
}
_PLUGINS = (
    "random nonce aes sha1 sha2 hmac kdf gcm openssl pem pkcs1 pkcs8 x509 pubkey "
    "curve25519 constraints kernel-netlink socket-default vici"
)
_RESPONDER_PORT = 500
_INITIATOR_PORT = 10500


@dataclass
class StrongswanResult:
    suite: str
    handshakes: int
    responder_cpu_s: float
    initiator_cpu_s: float
    wall_s: float
    us_per_handshake: float  # responder CPU per full handshake
    established: int  # IKE_SAs the responder reported afterwards (sanity check)
    strongswan_version: str
    #: UDP payload bytes and datagrams per handshake, both directions (loopback counters)
    bytes_per_handshake: float = 0.0
    datagrams_per_handshake: float = 0.0
    #: the key exchange methods the responder reported for the last IKE_SA (VICI fields)
    ke_fields: dict[str, str] | None = None

    @property
    def round_trips(self) -> float:
        return self.datagrams_per_handshake / 2


def machine_description() -> dict[str, Any]:
    """What the figures were measured on (kept next to every figure in the JSON)."""
    cpu = cpu_model() or "unknown"
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": _openssl_version(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _openssl_version() -> str:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return str(backend.openssl_version_text())
    except Exception:  # pragma: no cover - informational only
        return "unknown"


def strongswan_available(root: Path | None = None) -> bool:
    base = Path("/") if root is None else root
    return (
        os.geteuid() == 0
        and (base / CHARON.lstrip("/")).exists()
        and shutil.which("ip") is not None
        and (root is None or shutil.which("unshare") is not None)
    )


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid`` from schedstat (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _strongswan_conf(
    path: Path,
    vici: Path,
    port: int,
    log: Path,
    initiator: bool,
    *,
    block_threshold: int | None = None,
    log_level: int = 0,
) -> None:
    """charon's configuration.  By default tuned for sequential handshakes (no DoS
    protection, 3 retransmissions); with ``block_threshold`` a gateway's defaults instead
    (cookies above 10 half-open IKE_SAs, charon's retransmission schedule) with only the
    per-source half-open limit raised (``bench_storm.py``: every initiator shares one
    address)."""
    # reuse_ikesa=no: each initiate creates a NEW IKE_SA instead of returning the existing one.
    tuning = (
        "retransmit_tries = 3\n    init_limit_half_open = 0\n    dos_protection = no"
        if block_threshold is None
        else f"block_threshold = {block_threshold}"
    )
    path.write_text(
        f"""charon {{
    load_modular = no
    load = {_PLUGINS}
    port = {port}
    port_nat_t = {port + 4000}
    reuse_ikesa = {"no" if initiator else "yes"}
    install_routes = no
    install_virtual_ip = no
    {tuning}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
    filelog {{
        log {{
            path = {log}
            default = {log_level}
            append = no
        }}
    }}
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
    }}
}}
"""
    )


@dataclass
class _Creds:
    ca_der: bytes
    certs: dict[str, bytes]
    keys: dict[str, bytes]


def _make_rsa_creds() -> _Creds:
    """A test CA and two RSA-2048 end-entity certificates (CN=initiator, CN=responder)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("ikeresume bench CA"))
        .issuer_name(name("ikeresume bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    certs: dict[str, bytes] = {}
    keys: dict[str, bytes] = {}
    for serial, who in enumerate(("initiator", "responder"), start=2):
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        c = (
            x509.CertificateBuilder()
            .subject_name(name(who))
            .issuer_name(ca.subject)
            .public_key(k.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(who)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        certs[who] = c.public_bytes(serialization.Encoding.DER)
        keys[who] = k.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    return _Creds(ca.public_bytes(serialization.Encoding.DER), certs, keys)


def _conn(suite: str, me: str, peer: str, creds: _Creds | None) -> dict[str, Any]:
    initiator = me == "initiator"
    local: dict[str, Any] = {"id": me}
    remote: dict[str, Any] = {"id": peer}
    if creds is None:
        local["auth"] = remote["auth"] = "psk"
    else:
        local["auth"] = remote["auth"] = "pubkey"
        local["certs"] = [creds.certs[me]]
    conn: dict[str, Any] = {
        "version": "2",
        "local_addrs": ["127.0.0.1"],
        "remote_addrs": ["127.0.0.1"],
        "proposals": [_PROPOSALS[suite]],
        "childless": "force",
        "unique": "never",
        "mobike": "no",
        "encap": "no",
        "send_certreq": "no",
        "send_cert": "always",
        "dpd_delay": "0",
        "rekey_time": "0",
        "local-1": local,
        "remote-1": remote,
    }
    if initiator:
        conn["remote_port"] = str(_RESPONDER_PORT)
    return {"bench": conn}


def _session(path: Path, timeout: float = 10.0) -> Any:
    import vici

    deadline = time.monotonic() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            return vici.Session(s)
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"charon's vici socket {path} never appeared") from None
            time.sleep(0.05)


def _load(sess: Any, suite: str, me: str, peer: str, creds: _Creds | None) -> None:
    if creds is None:
        sess.load_shared(
            {"type": "IKE", "data": "ikeresume-bench-psk-0123456789", "owners": [me, peer]}
        )
    else:
        sess.load_cert({"type": "X509", "flag": "CA", "data": creds.ca_der})
        sess.load_key({"type": "rsa", "data": creds.keys[me]})
    sess.load_conn(_conn(suite, me, peer, creds))


def _initiate(sess: Any) -> None:
    sess.request("initiate", {"ike": "bench", "timeout": "10000", "loglevel": "-1"})


@contextlib.contextmanager
def _namespace(tag: str) -> Iterator[str]:
    ns = f"ikrsw-{tag}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def _start_charon(
    ns: str, conf: Path, log: Path, root: Path | None = None, scratch: Path | None = None
) -> subprocess.Popen[bytes]:
    # Own tmpfs /run in this exec's private mount namespace: charon keeps its pid file there
    # and refuses to start a second instance otherwise.  `exec` keeps the Popen pid = charon.
    if root is None:
        env = dict(os.environ, STRONGSWAN_CONF=str(conf))
        cmd = ["sh", "-c", f"mount -t tmpfs tmpfs /run && exec {CHARON}"]
    else:  # chrooted: the scratch dir is /mnt inside, the config one of its files
        env = dict(os.environ, STRONGSWAN_CONF=f"/mnt/{conf.name}")
        r = str(root)
        mounts = (
            f"mount --bind /dev {r}/dev && mount -t proc proc {r}/proc && "
            f"mount --bind {scratch} {r}/mnt && mount -t tmpfs tmpfs {r}/run && "
            f"exec chroot {r} {CHARON}"
        )
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", mounts]
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _lo_counters(ns: str) -> tuple[int, int]:
    """(bytes, packets) the namespace's loopback has carried (each datagram once)."""
    out = subprocess.run(
        ["ip", "-n", ns, "-s", "-j", "link", "show", "lo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tx = json.loads(out)[0]["stats64"]["tx"]
    return int(tx["bytes"]), int(tx["packets"])


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _strongswan_version(root: Path | None = None) -> str:
    try:
        chroot = ["chroot", str(root)] if root else []
        out = subprocess.run(
            [*chroot, "dpkg-query", "-W", "-f=${Version}", "strongswan-charon"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return out.strip() or "unknown"
    except OSError:
        return "unknown"


def _ke_fields(sess: Any) -> dict[str, str]:
    """The key exchange fields VICI reports for one of the responder's IKE_SAs."""
    for sa in sess.list_sas({"noblock": "yes"}):
        for ike in sa.values():
            return {
                k: v.decode() if isinstance(v, bytes) else str(v)
                for k, v in ike.items()
                if k == "dh-group" or k.startswith("ake") or k == "ppk"
            }
    return {}


def measure_strongswan(
    suite: str = "psk-x25519",
    handshakes: int = 300,
    warmup: int = 20,
    root: Path | None = None,
) -> StrongswanResult:
    """Run ``handshakes`` sequential full IKEv2 handshakes and return the responder's CPU.

    Sequential on purpose: the responder is never saturated, so the figure is CPU per
    handshake, not an artefact of queueing or cookie/DoS defences.  ``root``: run the
    charons chrooted into that Debian root (a newer strongSwan; see the module docstring).
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    if root is None and suite not in CLASSICAL_SUITES:
        raise ValueError(f"{suite} needs ML-KEM: a strongSwan 6 root (--root DIR)")
    if not strongswan_available(root):
        raise RuntimeError("needs root, `ip`, `unshare` and strongSwan (/usr/lib/ipsec/charon)")
    creds = _make_rsa_creds() if suite.startswith("rsa") else None
    tag = "".join(w[0] for w in suite.split("-")) + ("6" if root else "")
    with tempfile.TemporaryDirectory(prefix="ikr-sw-") as tmp, _namespace(tag) as ns:
        d = Path(tmp)
        inner = Path("/mnt") if root is not None else d  # the paths charon sees
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            sessions: dict[str, Any] = {}
            for who, port in (("responder", _RESPONDER_PORT), ("initiator", _INITIATOR_PORT)):
                conf = d / f"{who}.conf"
                vici_sock, log = inner / f"{who}.vici", inner / f"{who}.log"
                _strongswan_conf(conf, vici_sock, port, log, who == "initiator")
                procs[who] = _start_charon(ns, conf, d / f"{who}.out", root, d)
            for who in procs:
                sessions[who] = _session(d / f"{who}.vici")
            _load(sessions["responder"], suite, "responder", "initiator", creds)
            _load(sessions["initiator"], suite, "initiator", "responder", creds)
            ini = sessions["initiator"]
            try:
                for _ in range(warmup):
                    _initiate(ini)
            except Exception as e:
                log = (d / "initiator.log").read_text(errors="replace")[-2000:]
                rlog = (d / "responder.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"strongSwan handshake failed: {e}\n{log}\n{rlog}") from e
            rpid, ipid = procs["responder"].pid, procs["initiator"].pid
            b0, p0 = _lo_counters(ns)
            r0, i0, t0 = proc_cpu_seconds(rpid), proc_cpu_seconds(ipid), time.perf_counter()
            for _ in range(handshakes):
                _initiate(ini)
            r1, i1, t1 = proc_cpu_seconds(rpid), proc_cpu_seconds(ipid), time.perf_counter()
            b1, p1 = _lo_counters(ns)
            n_sas = sum(1 for _ in sessions["responder"].list_sas({"noblock": "yes"}))
            ke = _ke_fields(sessions["responder"])
            for s in sessions.values():
                with contextlib.suppress(Exception):
                    s.transport.socket.close()
        finally:
            for p in procs.values():
                _stop(p)
    return StrongswanResult(
        suite=suite,
        handshakes=handshakes,
        responder_cpu_s=r1 - r0,
        initiator_cpu_s=i1 - i0,
        wall_s=t1 - t0,
        us_per_handshake=(r1 - r0) / handshakes * 1e6,
        established=n_sas,
        strongswan_version=_strongswan_version(root),
        bytes_per_handshake=((b1 - b0) - 28 * (p1 - p0)) / handshakes,
        datagrams_per_handshake=(p1 - p0) / handshakes,
        ke_fields=ke,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handshakes", type=int, default=300, help="measured handshakes per suite")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--suite", choices=SUITES, action="append", help="default: all it can run")
    ap.add_argument("--root", type=Path, help="a Debian root with strongSwan 6 (ML-KEM suites)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not strongswan_available(args.root):
        print("bench_strongswan: needs root, iproute2 and strongSwan's charon", file=sys.stderr)
        return 1
    suites = args.suite or (SUITES if args.root else CLASSICAL_SUITES)
    results = [measure_strongswan(s, args.handshakes, args.warmup, args.root) for s in suites]
    machine = machine_description()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, kernel {machine['kernel']}")
    for r in results:
        print(
            f"strongSwan {r.strongswan_version} {r.suite:13s}: responder "
            f"{r.us_per_handshake:8.1f} us CPU/handshake over {r.handshakes} "
            f"(initiator {r.initiator_cpu_s / r.handshakes * 1e6:.1f} us, "
            f"{r.handshakes / r.wall_s:.0f} handshakes/s sequential, {r.established} IKE_SAs up, "
            f"{r.bytes_per_handshake:,.0f} B in {r.datagrams_per_handshake:.0f} datagrams)"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"machine": machine, "strongswan": [asdict(r) for r in results]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
