//! The engines against hostile datagrams: every mutation of the spec vectors' messages
//! (bit flips, truncations, extensions, splices) and random bytes, fed to a responder in
//! the middle of an exchange and to an initiator waiting for message 2.  Nothing may panic,
//! nothing may complete, and the honest exchange must still complete afterwards.  With and
//! without X25519 and ML-KEM-768 (a mutated encapsulation key or ciphertext included).

use std::net::SocketAddr;
use std::sync::Arc;

use ikeresume_native::credential::{Credential, ProtocolMode, SaParams, TrafficSelector};
use ikeresume_native::events::{InitiatorEvent, ResponderEvent};
use ikeresume_native::initiator::{Initiator, InitiatorConfig, MlKemPolicy};
use ikeresume_native::keyschedule::{bootstrap_secret, DirectionKeys};
use ikeresume_native::responder::{Responder, ResponderConfig};
use ikeresume_native::rng::RandomSource;
use zeroize::Zeroizing;

/// xorshift64*: deterministic, no dependency.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
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
    let (s, h) = bootstrap_secret(&p, &dk(1), &dk(2), b"\x02c", b"\x02r");
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

fn mutate(rng: &mut Prng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut m = pool[rng.below(pool.len())].clone();
    for _ in 0..=rng.below(3) {
        match rng.below(5) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => m.truncate(rng.below(m.len() + 1)),
            2 => m.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            3 => {
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(m.len().min(other.len()) + 1);
                m = [&m[..cut], &other[cut..]].concat();
            }
            _ => m = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        }
    }
    m
}

#[test]
fn hostile_datagrams_never_panic_nor_complete() {
    for (x25519, mlkem) in [
        (false, MlKemPolicy::Off),
        (true, MlKemPolicy::Off),
        (false, MlKemPolicy::Offer),
        (true, MlKemPolicy::Require),
    ] {
        let cred = credential();
        let client: SocketAddr = "198.51.100.7:500".parse().unwrap();
        let server: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let mut resp: Responder<SocketAddr> =
            Responder::new(ResponderConfig::default(), &[7; 32], RandomSource::Os).unwrap();
        let cfg = InitiatorConfig {
            use_x25519: x25519,
            mlkem,
            ..InitiatorConfig::default()
        };
        let mut init = Initiator::new(
            cred.clone(),
            cfg.clone(),
            RandomSource::Os,
            None,
            server,
            None,
        )
        .unwrap();
        let now = 1_000_000.0;
        init.initiate(now).unwrap();
        let m1 = init.datagrams_to_send().remove(0).0;
        // an honest message 2 to build message 3 from, with a second responder
        let mut other: Responder<SocketAddr> =
            Responder::new(ResponderConfig::default(), &[7; 32], RandomSource::Os).unwrap();
        other.receive_datagram(&m1, &client, now).unwrap();
        let Some(ResponderEvent::CredentialNeeded { token, .. }) = other.next_event() else {
            panic!()
        };
        other
            .provide_credential(token, Some(cred.clone()), None, now)
            .unwrap();
        let m2 = other.datagrams_to_send().remove(0).0;
        let pool = vec![m1.clone(), m2.clone(), [m1.clone(), m2.clone()].concat()];

        let mut rng = Prng(0x9E37_79B9_7F4A_7C15 ^ u64::from(x25519) ^ ((mlkem as u64) << 8));
        for _ in 0..20_000 {
            let d = mutate(&mut rng, &pool);
            resp.receive_datagram(&d, &client, now).unwrap();
            init.receive_datagram(&d, now);
            while let Some(ev) = resp.next_event() {
                match ev {
                    ResponderEvent::CredentialNeeded { token, handle, .. } => {
                        let c = (handle == cred.handle()).then(|| cred.clone());
                        resp.provide_credential(token, c, None, now).unwrap();
                    }
                    ResponderEvent::CommitNeeded { .. } | ResponderEvent::Complete(_) => {
                        panic!("a mutated datagram reached the commit: {}", hex(&d))
                    }
                    ResponderEvent::Failed { .. } => {}
                }
            }
            resp.datagrams_to_send();
            // the initiator may only complete on the genuine message 2
            if let Some(InitiatorEvent::Complete(_)) = init.next_event() {
                assert_eq!(d, m2, "completed on a mutated message 2");
            }
        }
        // the honest exchange still completes on the responder afterwards (in the next tick:
        // the mutated messages 1 carrying the real handle used up its ML-KEM quota for this
        // one, spec 5.6)
        let now = now + 10.0;
        let mut fresh = Initiator::new(
            cred.clone(),
            cfg.clone(),
            RandomSource::Os,
            None,
            server,
            None,
        )
        .unwrap();
        fresh.initiate(now).unwrap();
        let m1 = fresh.datagrams_to_send().remove(0).0;
        resp.receive_datagram(&m1, &client, now).unwrap();
        let Some(ResponderEvent::CredentialNeeded { token, .. }) = resp.next_event() else {
            panic!()
        };
        resp.provide_credential(token, Some(cred.clone()), None, now)
            .unwrap();
        let m2 = resp.datagrams_to_send().remove(0).0;
        fresh.receive_datagram(&m2, now);
        let m3 = fresh.datagrams_to_send().remove(0).0;
        resp.receive_datagram(&m3, &client, now).unwrap();
        let Some(ResponderEvent::CredentialNeeded { token, .. }) = resp.next_event() else {
            panic!()
        };
        resp.provide_credential(token, Some(cred.clone()), None, now)
            .unwrap();
        let Some(ResponderEvent::CommitNeeded { token, .. }) = resp.next_event() else {
            panic!()
        };
        resp.commit_result(token, true, now).unwrap();
        assert!(matches!(
            resp.next_event(),
            Some(ResponderEvent::Complete(_))
        ));
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
