//! The native engines alone, no Python: CPU per exchange of the responder (message 1 ->
//! credential -> message 2; message 3 -> credential -> MAC, keys, successor -> commit ->
//! completion) and of the initiator, with and without X25519.
//!
//!     cargo run --release --example bench_engine [-- N [responder|initiator|x25519|no_x25519]]
//!
//! CPU time of this thread from /proc/thread-self/schedstat (ns on CPU), so other load on a
//! shared machine does not count; wall time is printed beside it.  Credentials are answered
//! from a HashMap (the later rusqlite store adds its own cost).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ikeresume_native::credential::{Credential, ProtocolMode, SaParams, TrafficSelector};
use ikeresume_native::events::{InitiatorEvent, ResponderEvent};
use ikeresume_native::initiator::{Initiator, InitiatorConfig};
use ikeresume_native::keyschedule::{bootstrap_secret, DirectionKeys};
use ikeresume_native::responder::{Responder, ResponderConfig};
use ikeresume_native::rng::RandomSource;
use zeroize::Zeroizing;

const T0: f64 = 1_000_000.0;
const SECRET: [u8; 32] = [0x4b; 32];

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn seeded(label: String) -> RandomSource {
    RandomSource::Seeded {
        seed: label.into_bytes(),
        counter: 0,
    }
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
    let mut rng = seeded("bench credentials".into());
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

type Rec = Vec<(Vec<u8>, Vec<u8>, Vec<u8>, SocketAddr)>; // m1, m2, m3, addr

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

fn record(creds: &[Credential], table: &HashMap<Vec<u8>, Credential>, x25519: bool) -> Rec {
    let mut r: Responder<SocketAddr> = Responder::new(
        ResponderConfig::default(),
        &SECRET,
        seeded("responder".into()),
    )
    .expect("r");
    let server: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    creds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let addr: SocketAddr = format!("198.51.100.7:{}", 1024 + i % 60000)
                .parse()
                .expect("addr");
            let cfg = InitiatorConfig {
                use_x25519: x25519,
                ..InitiatorConfig::default()
            };
            let mut init =
                Initiator::new(c.clone(), cfg, seeded(format!("i{i}")), None, server, None)
                    .expect("i");
            init.initiate(T0).expect("initiate");
            let m1 = init.datagrams_to_send().remove(0).0;
            r.receive_datagram(&m1, &addr, T0).expect("m1");
            answer(&mut r, table);
            let m2 = r.datagrams_to_send().remove(0).0;
            init.receive_datagram(&m2, T0);
            let m3 = init.datagrams_to_send().remove(0).0;
            (m1, m2, m3, addr)
        })
        .collect()
}

fn responder_run(rec: &Rec, table: &HashMap<Vec<u8>, Credential>) -> (u64, f64) {
    let mut r: Responder<SocketAddr> = Responder::new(
        ResponderConfig::default(),
        &SECRET,
        seeded("responder".into()),
    )
    .expect("r");
    let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
    let mut done = 0;
    for (m1, _m2, m3, addr) in rec {
        r.receive_datagram(m1, addr, T0).expect("m1");
        answer(&mut r, table);
        r.datagrams_to_send();
        r.receive_datagram(m3, addr, T0).expect("m3");
        done += answer(&mut r, table);
        r.datagrams_to_send();
    }
    assert_eq!(done, rec.len());
    (thread_cpu_ns() - cpu0, wall0.elapsed().as_secs_f64())
}

fn initiator_run(rec: &Rec, creds: &[Credential], x25519: bool) -> (u64, f64) {
    let server: SocketAddr = "192.0.2.1:500".parse().expect("addr");
    let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
    let mut done = 0;
    for (i, ((_m1, m2, _m3, _a), c)) in rec.iter().zip(creds).enumerate() {
        let cfg = InitiatorConfig {
            use_x25519: x25519,
            ..InitiatorConfig::default()
        };
        let mut init =
            Initiator::new(c.clone(), cfg, seeded(format!("i{i}")), None, server, None).expect("i");
        init.initiate(T0).expect("initiate");
        init.datagrams_to_send();
        init.receive_datagram(m2, T0);
        init.datagrams_to_send();
        done += usize::from(matches!(
            init.next_event(),
            Some(InitiatorEvent::Complete(_))
        ));
    }
    assert_eq!(done, rec.len());
    (thread_cpu_ns() - cpu0, wall0.elapsed().as_secs_f64())
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let creds = credentials(n);
    let table: HashMap<Vec<u8>, Credential> = creds
        .iter()
        .map(|c| (c.handle().to_vec(), c.clone()))
        .collect();
    println!(
        "native engines alone, {n} exchanges per run, median of 5 runs (thread CPU; wall beside):"
    );
    // optional second argument: only "responder" or "initiator", "x25519" or "no_x25519"
    let only = std::env::args().nth(2).unwrap_or_default();
    for x25519 in [false, true] {
        if only.ends_with("x25519") && (only == "x25519") != x25519 {
            continue;
        }
        let rec = record(&creds, &table, x25519);
        for (role, f) in [
            (
                "responder",
                &(|| responder_run(&rec, &table)) as &dyn Fn() -> (u64, f64),
            ),
            ("initiator", &(|| initiator_run(&rec, &creds, x25519))),
        ] {
            if (only == "responder" || only == "initiator") && only != role {
                continue;
            }
            let mut runs: Vec<(u64, f64)> = (0..5).map(|_| f()).collect();
            runs.sort_by_key(|r| r.0);
            let (cpu, wall) = runs[2];
            let us = cpu as f64 / n as f64 / 1000.0;
            println!(
                "  {role:<10} {:<10} {us:7.2} us CPU/exchange = {:>9.0} exchanges/s/core (wall {:.2} us)",
                if x25519 { "x25519" } else { "no_x25519" },
                1e6 / us,
                wall * 1e6 / n as f64,
            );
        }
    }
}
