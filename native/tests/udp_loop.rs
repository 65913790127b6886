//! The prototype UDP loop (feature `udp`) on loopback, IPv4 and IPv6, with and without
//! NAT-T framing: a full exchange completes through recvmmsg/sendmmsg, the store's
//! compare-and-set moves the chain on, garbage and ESP on the NAT-T port are dropped.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ikeresume_native::credential::{
    Credential, Lifetimes, ProtocolMode, SaParams, TrafficSelector,
};
use ikeresume_native::events::InitiatorEvent;
use ikeresume_native::initiator::{Initiator, InitiatorConfig};
use ikeresume_native::keyschedule::{bootstrap_secret, DirectionKeys};
use ikeresume_native::responder::{Responder, ResponderConfig};
use ikeresume_native::rng::RandomSource;
use ikeresume_native::udp::{serve_once, CredentialSource, UdpBatch};
use zeroize::Zeroizing;

#[derive(Default)]
struct Table(HashMap<Vec<u8>, Credential>);

impl CredentialSource for Table {
    fn lookup(&mut self, handle: &[u8]) -> Option<(Credential, Option<Lifetimes>)> {
        self.0.get(handle).map(|c| (c.clone(), None))
    }
    fn commit(&mut self, handle: &[u8], generation: u32, successor: &Credential) -> bool {
        match self.0.get(handle) {
            Some(c) if c.generation() == generation => {
                self.0.remove(handle);
                self.0
                    .insert(successor.handle().to_vec(), successor.clone());
                true
            }
            _ => false,
        }
    }
}

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
    let (s, h) = bootstrap_secret(&p, &dk(3), &dk(4), b"\x02c", b"\x02r");
    Credential::new(
        ProtocolMode::Hardened,
        h.to_vec(),
        0,
        s.to_vec(),
        b"\x02c".to_vec(),
        b"\x02r".to_vec(),
        p,
    )
    .unwrap()
}

fn frame(natt: bool, d: &[u8]) -> Vec<u8> {
    if natt {
        [&[0u8; 4][..], d].concat()
    } else {
        d.to_vec()
    }
}

fn exchange(bind: &str, natt: bool) {
    let wait = Duration::from_secs(5); // only bounds a hang: each step waits for a datagram
    let mut udp = UdpBatch::bind(bind.parse().unwrap(), natt, 32, wait).unwrap();
    let server = udp.local_addr().unwrap();
    let client = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).unwrap();
    client.set_read_timeout(Some(wait)).unwrap();
    let cred = credential();
    let mut table = Table::default();
    table.0.insert(cred.handle().to_vec(), cred.clone());
    let mut engine: Responder<SocketAddr> =
        Responder::new(ResponderConfig::default(), &[9; 32], RandomSource::Os).unwrap();
    let mut init = Initiator::new(
        cred.clone(),
        InitiatorConfig::default(),
        RandomSource::Os,
        None,
        server,
        None,
    )
    .unwrap();
    let mut done = Vec::new();
    let now = 1_000_000.0;

    // garbage first (and ESP on the NAT-T port): dropped, nothing answered
    client.send_to(b"\x01\x02\x03\x04 not ike", server).unwrap();
    assert_eq!(
        serve_once(&mut udp, &mut engine, &mut table, now, &mut done).unwrap(),
        1
    );
    if natt {
        assert_eq!(udp.stats.dropped_not_ike, 1);
    } else {
        assert_eq!(
            engine
                .stats
                .get(ikeresume_native::stats::Stat::DropMalformed),
            1
        );
    }
    assert_eq!(udp.stats.sent, 0);

    init.initiate(now).unwrap();
    for _ in 0..2 {
        for (d, to) in init.datagrams_to_send() {
            client.send_to(&frame(natt, &d), to).unwrap();
        }
        assert_eq!(
            serve_once(&mut udp, &mut engine, &mut table, now, &mut done).unwrap(),
            1
        );
        if done.is_empty() {
            let mut buf = [0u8; 4096];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, server);
            let data = if natt { &buf[4..n] } else { &buf[..n] };
            init.receive_datagram(data, now);
        }
    }
    assert_eq!(done.len(), 1, "the responder completed");
    let Some(InitiatorEvent::Complete(c)) = init.next_event() else {
        panic!("initiator")
    };
    assert_eq!(
        c.sa,
        ikeresume_native::events::SaPair {
            initiator_side: true,
            ..done[0].sa.clone()
        }
    );
    assert_eq!(done[0].addr, client.local_addr().unwrap());
    assert!(
        table.0.contains_key(c.successor.handle()),
        "the ratchet moved on"
    );
    assert!(!table.0.contains_key(cred.handle()));
}

#[test]
fn ipv4_plain() {
    exchange("127.0.0.1:0", false);
}

#[test]
fn ipv4_natt() {
    exchange("127.0.0.1:0", true);
}

#[test]
fn ipv6_natt() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here");
        return;
    }
    exchange("[::1]:0", true);
}
