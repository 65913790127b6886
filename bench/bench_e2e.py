"""Time from a resumption request to the first ESP packet, next to strongSwan's full IKEv2.

Both measured in the same User-Mode Linux guest (a kernel with ESP), same two network
namespaces, same CHILD_SA (ESP AES-GCM-128, transport, IPv4), interleaved run by run:

* baseline: strongSwan 5.9 charon, VICI ``initiate`` (IKE_SA_INIT + IKE_AUTH, PSK, x25519)
  until a UDP datagram from the initiator reaches the responder through the new SAs;
* ikeresume: ``resume_with_store`` (what ``ikeresume resume`` runs) against ``ikeresume
  serve`` with ``[install] mode = "xfrm"``, the initiator installing with ikeshim, until a
  UDP datagram reaches the responder through the new SAs.

Run (root, user-mode-linux and strongSwan installed)::

    python bench/bench_e2e.py --runs 50 --json bench/results/bench_e2e.json

UML inflates system-call costs (every syscall is a ptrace round trip on the host), so the
absolute figures are slower than on bare metal for both sides; the ratio is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ikeshim.testbed import run_in_uml, strongswan_available, uml_available  # noqa: E402


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "host_kernel": platform.release(),
        "python": platform.python_version(),
        "guest": "User-Mode Linux (Debian user-mode-linux), mem=768M",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    for ok, why in (uml_available(), strongswan_available()):
        if not ok:
            print(f"bench_e2e: needs {why}", file=sys.stderr)
            return 2
    res = run_in_uml(
        f"{shlex.quote(sys.executable)} bench/bench_e2e_guest.py {args.runs} $IKR_OUT/e2e.json",
        cwd=REPO,
        timeout=120 + 8 * args.runs,
        keep=True,
        env={"PYTHONPATH": str(REPO)},
    )
    data = json.loads(res.out("e2e.json").read_text())
    data["machine"] = machine()
    full, resumed = data["full_ike_to_first_esp"], data["resumption_to_first_esp"]
    print(f"machine: {data['machine']['cpu']} x{data['machine']['cores']}, guest UML "
          f"{data['guest_kernel']}; {data['runs']} interleaved runs")
    print(f"{'':34} {'median':>9} {'p10':>9} {'p90':>9}")
    for name, d in (
        ("strongSwan full IKEv2 -> 1st ESP", full),
        ("ikeresume resume -> 1st ESP", resumed),
        ("  resume_with_store (store+proto)", data["resumption_client_incl_store"]),
        ("    of which protocol exchange", data["resumption_protocol_only"]),
        ("  initiator XFRM install", data["initiator_install"]),
        ("  then until responder passes ESP", data["after_install_until_through"]),
    ):
        print(f"{name:34} {d['median_ms']:8.2f}ms {d['p10_ms']:8.2f}ms {d['p90_ms']:8.2f}ms")
    print(f"speedup (median full / median resume): {data['speedup_median']:.1f}x")
    print(f"ESP verified on probe: {data['esp_verified']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
