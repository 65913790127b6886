//! The native engines alone, no Python: CPU per exchange of the responder (message 1 ->
//! credential -> message 2; message 3 -> credential -> MAC, keys, successor -> commit ->
//! completion) and of the initiator, for each key exchange mode: none, X25519, ML-KEM-768,
//! X25519 + ML-KEM-768.
//!
//!     cargo run --release --example bench_engine [-- N [MODE ...]] [--json]
//!
//! MODE is one of none, x25519, mlkem768, x25519+mlkem768 (default: all four).
//!
//! Both engines run live against each other in one thread, with the system's randomness
//! (aws-lc's key generation and encapsulation: the production paths; ML-KEM makes every
//! message 2 unique, so recorded messages cannot be replayed).  Each side's segments are
//! timed with CLOCK_THREAD_CPUTIME_ID (CPU time of this thread: other load on a shared
//! machine does not count), and the cost of reading that clock, measured here too, is
//! subtracted.  Credentials are answered from a HashMap (a store adds its own cost).
//! Five runs per mode, interleaved; the median run is reported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ikeresume_native::credential::{Credential, ProtocolMode, SaParams, TrafficSelector};
use ikeresume_native::events::{InitiatorEvent, ResponderEvent};
use ikeresume_native::initiator::{Initiator, InitiatorConfig, MlKemPolicy};
use ikeresume_native::keyschedule::{bootstrap_secret, DirectionKeys};
use ikeresume_native::responder::{Responder, ResponderConfig};
use ikeresume_native::rng::RandomSource;
use nix::time::{clock_gettime, ClockId};
use zeroize::Zeroizing;

const T0: f64 = 1_000_000.0;
const SECRET: [u8; 32] = [0x4b; 32];
const MODES: [(&str, bool, bool); 4] = [
    ("none", false, false),
    ("x25519", true, false),
    ("mlkem768", false, true),
    ("x25519+mlkem768", true, true),
];

fn cpu_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn credentials(n: usize) -> Vec<Credential> {
    let ts = |a: &str, b: &str| TrafficSelector::new(a, b, 0, 0, 65535).expect("ts");
    let params = Arc::new(
        SaParams::new(
            2,
            20,
            256,
            0,
            "198.51.100.7",
            "192.0.2.1",
            vec![ts("10.8.0.7", "10.8.0.7")],
            vec![ts("10.0.0.0", "10.0.255.255")],
            None,
            None,
            128,
        )
        .expect("params"),
    );
    let mut rng = RandomSource::Seeded {
        seed: b"bench credentials".to_vec(),
        counter: 0,
    };
    (0..n)
        .map(|_| {
            let mut dk = || {
                let mut k = vec![0u8; 36];
                let mut spi = [0u8; 4];
                rng.fill(&mut k).expect("rng");
                rng.fill(&mut spi).expect("rng");
                DirectionKeys {
                    spi: u32::from_be_bytes(spi) | 0x100,
                    encr_key: Zeroizing::new(k),
                    integ_key: Zeroizing::new(Vec::new()),
                }
            };
            let (a, b) = (dk(), dk());
            let (id_i, id_r) = (
                b"\x02client.example.org".to_vec(),
                b"\x02vpn.example.org".to_vec(),
            );
            let (s, h) = bootstrap_secret(&params, &a, &b, &id_i, &id_r);
            Credential::new(
                ProtocolMode::Hardened,
                h.to_vec(),
                0,
                s.to_vec(),
                id_i,
                id_r,
                Arc::clone(&params),
            )
            .expect("credential")
        })
        .collect()
}

fn answer(r: &mut Responder<SocketAddr>, table: &HashMap<Vec<u8>, Credential>) -> usize {
    let mut done = 0;
    while let Some(ev) = r.next_event() {
        match ev {
            ResponderEvent::CredentialNeeded { token, handle, .. } => {
                r.provide_credential(token, table.get(&handle).cloned(), None, T0)
                    .expect("answer");
            }
            ResponderEvent::CommitNeeded { token, .. } => {
                r.commit_result(token, true, T0).expect("commit")
            }
            ResponderEvent::Complete(_) => done += 1,
            ResponderEvent::Failed { reason, .. } => panic!("refused: {reason}"),
        }
    }
    done
}

/// The cost of one CLOCK_THREAD_CPUTIME_ID read, in ns (median of a few batches).
fn clock_cost_ns() -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = cpu_ns();
            for _ in 0..10_000 {
                std::hint::black_box(cpu_ns());
            }
            (cpu_ns() - t0) as f64 / 10_000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

/// One run of `creds.len()` live exchanges; (responder ns, initiator ns) of CPU, with the
/// clock reads (two per segment) subtracted.
fn run(
    creds: &[Credential],
    table: &HashMap<Vec<u8>, Credential>,
    x25519: bool,
    mlkem: bool,
    clock: f64,
) -> (f64, f64) {
    let server: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    let mut r: Responder<SocketAddr> =
        Responder::new(ResponderConfig::default(), &SECRET, RandomSource::Os).expect("r");
    let cfg = InitiatorConfig {
        use_x25519: x25519,
        mlkem: if mlkem {
            MlKemPolicy::Require
        } else {
            MlKemPolicy::Off
        },
        ..InitiatorConfig::default()
    };
    let (mut r_ns, mut i_ns) = (0u64, 0u64);
    let mut done = 0;
    for (i, c) in creds.iter().enumerate() {
        let addr: SocketAddr = format!("198.51.100.7:{}", 1024 + i % 60000)
            .parse()
            .expect("addr");
        let t = cpu_ns();
        let mut init = Initiator::new(c.clone(), cfg.clone(), RandomSource::Os, None, server, None)
            .expect("i");
        init.initiate(T0).expect("initiate");
        let m1 = init.datagrams_to_send().remove(0).0;
        let t1 = cpu_ns();
        r.receive_datagram(&m1, &addr, T0).expect("m1");
        answer(&mut r, table);
        let m2 = r.datagrams_to_send().remove(0).0;
        let t2 = cpu_ns();
        init.receive_datagram(&m2, T0);
        let m3 = init.datagrams_to_send().remove(0).0;
        let ok = matches!(init.next_event(), Some(InitiatorEvent::Complete(_)));
        let t3 = cpu_ns();
        r.receive_datagram(&m3, &addr, T0).expect("m3");
        done += answer(&mut r, table);
        r.datagrams_to_send();
        let t4 = cpu_ns();
        assert!(ok, "initiator did not complete");
        i_ns += (t1 - t) + (t3 - t2);
        r_ns += (t2 - t1) + (t4 - t3);
    }
    assert_eq!(done, creds.len());
    // each segment includes about one clock read
    let overhead = 2.0 * clock * creds.len() as f64;
    (r_ns as f64 - overhead, i_ns as f64 - overhead)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5_000);
    let wanted: Vec<&(&str, bool, bool)> = MODES
        .iter()
        .filter(|(m, _, _)| {
            args.iter().all(|a| !MODES.iter().any(|x| x.0 == a)) || args.contains(&m.to_string())
        })
        .collect();
    let creds = credentials(n);
    let table: HashMap<Vec<u8>, Credential> = creds
        .iter()
        .map(|c| (c.handle().to_vec(), c.clone()))
        .collect();
    let clock = clock_cost_ns();
    let mut per_mode: Vec<Vec<(f64, f64)>> = vec![Vec::new(); wanted.len()];
    for _ in 0..5 {
        for (k, (_, x, m)) in wanted.iter().enumerate() {
            per_mode[k].push(run(&creds, &table, *x, *m, clock));
        }
    }
    let mut rows = Vec::new();
    for ((name, _, _), runs) in wanted.iter().zip(per_mode) {
        let med = |f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] / n as f64 / 1000.0
        };
        let (r_us, i_us) = (med(|x| x.0), med(|x| x.1));
        rows.push((*name, r_us, i_us));
    }
    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|(m, r, i)| {
                format!(
                    "{{\"mode\": \"{m}\", \"responder_cpu_us\": {r:.3}, \"initiator_cpu_us\": {i:.3}, \
                     \"responder_exchanges_per_s_one_core\": {:.0}}}",
                    1e6 / r
                )
            })
            .collect();
        println!(
            "{{\"exchanges_per_run\": {n}, \"runs\": 5, \"clock_read_ns\": {clock:.1}, \"modes\": [{}]}}",
            items.join(", ")
        );
        return;
    }
    println!(
        "native engines alone, live exchanges, {n} per run, median of 5 runs \
         (thread CPU per side; one clock read = {clock:.0} ns, subtracted):"
    );
    for (m, r, i) in rows {
        println!(
            "  {m:<16} responder {r:7.2} us CPU = {:>8.0} exchanges/s/core   initiator {i:7.2} us",
            1e6 / r
        );
    }
}
