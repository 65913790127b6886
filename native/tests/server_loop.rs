//! The service core on loopback, without Python: IPv4 and IPv6, with and without NAT-T
//! framing, a store answered from this test thread (the external-store hand-over), a full
//! exchange through recvmmsg/sendmmsg, the ratchet moving on, garbage and ESP on the NAT-T
//! port dropped and counted, and a replayed message 3 refused.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ikeresume_native::credential::{
    Credential, Lifetimes, ProtocolMode, SaParams, TrafficSelector,
};
use ikeresume_native::events::InitiatorEvent;
use ikeresume_native::initiator::{Initiator, InitiatorConfig};
use ikeresume_native::keyschedule::{bootstrap_secret, DirectionKeys};
use ikeresume_native::responder::ResponderConfig;
use ikeresume_native::rng::RandomSource;
use ikeresume_native::server::admission::Limits;
use ikeresume_native::server::udp::BindOptions;
use ikeresume_native::server::{Inbound, Outgoing, Server, ServerConfig, StoreConfig};
use ikeresume_native::store::Lookup;
use zeroize::Zeroizing;

const HANG: Duration = Duration::from_secs(30);

fn credential() -> Credential {
    let ts = TrafficSelector::new("10.0.0.0", "10.0.255.255", 0, 0, 65535).unwrap();
    let p = Arc::new(
        SaParams::new(
            2,
            20,
            256,
            0,
            "198.51.100.7",
            "192.0.2.1",
            vec![ts.clone()],
            vec![ts],
            None,
            None,
            128,
        )
        .unwrap(),
    );
    let dk = |b: u8| DirectionKeys {
        spi: 0x1000 + u32::from(b),
        encr_key: Zeroizing::new(vec![b; 36]),
        integ_key: Zeroizing::new(Vec::new()),
    };
    let (id_i, id_r) = (b"\x02client".to_vec(), b"\x02gw".to_vec());
    let (s, h) = bootstrap_secret(&p, &dk(1), &dk(2), &id_i, &id_r);
    Credential::new(
        ProtocolMode::Hardened,
        h.to_vec(),
        0,
        s.to_vec(),
        id_i,
        id_r,
        p,
    )
    .unwrap()
}

fn server(listen: SocketAddr, natt: bool) -> Server {
    let cfg = ServerConfig {
        listen: vec![listen],
        bind: BindOptions {
            natt,
            reuse_port: false,
            buffer_bytes: 0,
            batch: 16,
        },
        server_secret: Zeroizing::new(vec![7u8; 32]),
        responder: ResponderConfig {
            allow_x25519: true,
            credential_cache_size: 16,
            ..ResponderConfig::default()
        },
        limits: Limits {
            per_source_rate: 1000.0,
            per_source_burst: 1000.0,
            ..Limits::default()
        },
        miss_reuse_seconds: 0.0,
        store: StoreConfig::External,
        install_node: Some("test-node".into()),
    };
    let mut s = Server::bind(cfg).expect("bind");
    s.start().expect("start");
    s
}

/// The store: answer every request the server hands over, from `table` (compare-and-set).
fn serve_store(s: &Server, table: &mut HashMap<Vec<u8>, Credential>, completions: &mut usize) {
    for item in s.shared.outgoing.wait(Duration::from_millis(5), 64) {
        match item {
            Outgoing::Lookup {
                lane,
                token,
                handle,
                ..
            } => {
                let answer = Ok(match table.get(&handle) {
                    Some(c) => Lookup::Found(Box::new((c.clone(), Lifetimes::default()))),
                    None => Lookup::Miss,
                });
                s.shared.lanes[lane].post([Inbound::Credential { token, answer }]);
            }
            Outgoing::Commit(c) => {
                let ok = matches!(table.get(&c.handle), Some(x) if x.generation() == c.generation);
                if ok && c.sa.is_some() {
                    *completions += 1; // the pair to commit into the outbox and install
                }
                if ok {
                    table.remove(&c.handle);
                    table.insert(c.successor.handle().to_vec(), c.successor.clone());
                }
                s.shared.lanes[c.lane].post([Inbound::Commit {
                    token: c.token,
                    result: Ok(ok),
                }]);
            }
            _ => {}
        }
    }
}

fn frame(natt: bool, d: &[u8]) -> Vec<u8> {
    if natt {
        [&[0u8; 4][..], d].concat()
    } else {
        d.to_vec()
    }
}

fn unframe(natt: bool, d: &[u8]) -> Vec<u8> {
    if natt {
        d[4..].to_vec()
    } else {
        d.to_vec()
    }
}

fn exchange(listen: &str, natt: bool) {
    let s = server(listen.parse().unwrap(), natt);
    let addr = s.addrs[0];
    let c0 = credential();
    let mut table = HashMap::from([(c0.handle().to_vec(), c0.clone())]);
    let mut completions = 0;
    let client = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    // garbage first: dropped before or by the engine, never answered
    for g in [&b"x"[..], &[0u8; 40][..], &[0xff][..]] {
        client.send_to(g, addr).unwrap();
    }
    let mut ini = Initiator::new(
        c0.clone(),
        InitiatorConfig::default(),
        RandomSource::Seeded {
            seed: b"t".to_vec(),
            counter: 0,
        },
        None,
        addr,
        None,
    )
    .unwrap();
    let mut now = 1.0;
    ini.initiate(now).unwrap();
    let mut msg3 = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while completions == 0 {
        assert!(t0.elapsed() < HANG, "no completion");
        for (d, _) in ini.datagrams_to_send() {
            msg3 = d.clone();
            client.send_to(&frame(natt, &d), addr).unwrap();
        }
        serve_store(&s, &mut table, &mut completions);
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            now += 0.001;
            ini.receive_datagram(&unframe(natt, &buf[..n]), now);
        }
    }
    let succ = match ini.next_event() {
        Some(InitiatorEvent::Complete(c)) => c.successor,
        other => panic!("expected a completion, got {other:?}"),
    };
    assert!(table.contains_key(succ.handle()) && !table.contains_key(c0.handle()));
    // message 3 replayed: dropped (the handle just completed), nothing more committed
    client.send_to(&frame(natt, &msg3), addr).unwrap();
    let t1 = Instant::now();
    loop {
        serve_store(&s, &mut table, &mut completions);
        let st = s.shared.lanes[0].snapshot.lock().unwrap().engine.clone();
        if st.get(ikeresume_native::stats::Stat::DropReplayedMsg3) >= 1 {
            break;
        }
        assert!(t1.elapsed() < HANG, "the replay was not seen");
    }
    assert_eq!(completions, 1);
    let c = &s.shared.counters;
    assert_eq!(c.resumed.load(Ordering::Relaxed), 1);
    let dropped: u64 = c.drops.iter().map(|x| x.load(Ordering::Relaxed)).sum();
    let snap = s.shared.lanes[0].snapshot.lock().unwrap().clone();
    if natt {
        // unframed datagrams never reach admission on a NAT-T port; forty zero bytes are
        // a marker and 36 bytes that admission refuses
        assert_eq!((snap.udp.natt_not_ike, snap.udp.natt_keepalive), (1, 1));
        assert_eq!(dropped, 1);
    } else {
        assert_eq!(dropped, 3, "the garbage is dropped by admission");
    }
}

#[test]
fn ipv4_exchange() {
    exchange("127.0.0.1:0", false);
}

#[test]
fn ipv4_natt_exchange() {
    exchange("127.0.0.1:0", true);
}

#[test]
fn ipv6_exchange() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback: skipped");
        return;
    }
    exchange("[::1]:0", false);
}

#[test]
fn stop_commits_nothing_new_and_joins() {
    let mut s = server("127.0.0.1:0".parse().unwrap(), false);
    s.shared.draining.store(true, Ordering::Release);
    s.stop();
    assert!(!s.running());
    assert!(s.shared.failure.lock().unwrap().is_none());
}

#[test]
fn a_panicking_lane_is_recorded_not_propagated() {
    let mut s = server("127.0.0.1:0".parse().unwrap(), false);
    s.shared.inject_panic.store(true, Ordering::Release);
    s.shared.lanes[0].wake();
    let t0 = Instant::now();
    while s.shared.failure.lock().unwrap().is_none() {
        assert!(t0.elapsed() < HANG);
        std::thread::sleep(Duration::from_millis(5));
    }
    s.stop();
    assert!(s
        .shared
        .failure
        .lock()
        .unwrap()
        .as_deref()
        .unwrap()
        .contains("injected"));
}
