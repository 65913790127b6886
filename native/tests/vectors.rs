//! specs/vectors/hardened*.json replayed byte for byte: every recorded random draw (the
//! ML-KEM seed and each encapsulation's `m` too) goes into the native engines, every
//! message, intermediate value and resulting key must come out identical.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use ikeresume_native::credential::{
    Credential, Lifetimes, ProtocolMode, SaParams, TrafficSelector,
};
use ikeresume_native::events::{InitiatorEvent, ResponderEvent};
use ikeresume_native::initiator::{Initiator, InitiatorConfig, MlKemPolicy};
use ikeresume_native::keyschedule::{
    bootstrap_secret, compact_init, context, mlkem_encapsulate_deterministic, DirectionKeys,
    MlKemKey, ResponderPrf, RunSecrets,
};
use ikeresume_native::messages::{build_nack, parse_request_untrusted, Request, ZERO_SPI};
use ikeresume_native::responder::{Responder, ResponderConfig};
use ikeresume_native::rng::RandomSource;
use zeroize::Zeroizing;

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load(name: &str) -> Vec<Value> {
    let path = format!("{}/../specs/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    serde_json::from_str::<Value>(&text)
        .expect("json")
        .as_array()
        .expect("list")
        .clone()
}

fn ts(v: &Value) -> TrafficSelector {
    TrafficSelector::new(
        v["start_addr"].as_str().unwrap(),
        v["end_addr"].as_str().unwrap(),
        v["protocol"].as_u64().unwrap() as u8,
        v["start_port"].as_u64().unwrap() as u16,
        v["end_port"].as_u64().unwrap() as u16,
    )
    .unwrap()
}

fn params(p: &Value) -> SaParams {
    let port = |k: &str| p[k].as_u64().map(|x| x as u16);
    SaParams::new(
        if p["mode"] == "tunnel" { 2 } else { 1 },
        p["encr"].as_u64().unwrap() as u16,
        p["encr_key_bits"].as_u64().unwrap() as u16,
        p["integ"].as_u64().unwrap() as u16,
        p["initiator_addr"].as_str().unwrap(),
        p["responder_addr"].as_str().unwrap(),
        p["tsi"].as_array().unwrap().iter().map(ts).collect(),
        p["tsr"].as_array().unwrap().iter().map(ts).collect(),
        port("natt_initiator_port"),
        port("natt_responder_port"),
        p["replay_window"].as_u64().unwrap() as u32,
    )
    .unwrap()
}

fn dk(v: &Value) -> DirectionKeys {
    DirectionKeys {
        spi: v["spi"].as_u64().unwrap() as u32,
        encr_key: Zeroizing::new(hex(&v["encr_key"])),
        integ_key: Zeroizing::new(hex(&v["integ_key"])),
    }
}

fn addr(v: &Value) -> SocketAddr {
    format!("{}:{}", v[0].as_str().unwrap(), v[1].as_u64().unwrap())
        .parse()
        .unwrap()
}

fn lifetimes(v: &Value) -> Lifetimes {
    Lifetimes {
        soft_seconds: v["soft_seconds"].as_u64(),
        hard_seconds: v["hard_seconds"].as_u64(),
        soft_bytes: v["soft_bytes"].as_u64(),
        hard_bytes: v["hard_bytes"].as_u64(),
        soft_packets: v["soft_packets"].as_u64(),
        hard_packets: v["hard_packets"].as_u64(),
    }
}

fn scripted(v: &Value) -> RandomSource {
    RandomSource::Scripted(v.as_array().unwrap().iter().map(hex).collect())
}

fn replay(v: &Value) {
    let c = &v["credential"];
    let inter = &v["intermediate"];
    let run = &v["run"];
    let msgs = &v["messages"];
    let p = Arc::new(params(&c["params"]));
    assert_eq!(p.params_bytes(), hex(&c["params_bytes"]));
    assert_eq!(p.digest().to_vec(), hex(&c["params_digest"]));
    let (id_i, id_r) = (hex(&c["id_i"]), hex(&c["id_r"]));
    let (secret, handle) = bootstrap_secret(&p, &dk(&c["i_to_r"]), &dk(&c["r_to_i"]), &id_i, &id_r);
    assert_eq!(secret.to_vec(), hex(&c["secret"]));
    assert_eq!(handle.to_vec(), hex(&c["handle"]));
    let cred = Credential::new(
        ProtocolMode::Hardened,
        handle.to_vec(),
        c["generation"].as_u64().unwrap() as u32,
        secret.to_vec(),
        id_i,
        id_r,
        Arc::clone(&p),
    )
    .unwrap();
    assert_eq!(context(&cred), hex(&inter["context"]));

    let x25519 = inter.get("dh").is_some();
    let mlkem = inter.get("mlkem_ek").is_some();
    let now = run["now"].as_f64().unwrap();
    let client = addr(&run["initiator_addr"]);
    let server = addr(&run["responder_addr"]);
    let lt = lifetimes(&run["lifetimes"]);
    let server_secret = hex(&run["server_secret"]);
    let cfg = ResponderConfig {
        cookie_tick_seconds: run["tick_seconds"].as_f64().unwrap(),
        ..ResponderConfig::default()
    };
    let kem = run
        .get("responder_kem_random")
        .map_or(RandomSource::Scripted(Default::default()), scripted);
    let mut resp: Responder<SocketAddr> =
        Responder::new(cfg, &server_secret, scripted(&run["responder_random"]))
            .unwrap()
            .with_kem_source(kem);
    let icfg = InitiatorConfig {
        use_x25519: x25519,
        mlkem: if mlkem {
            MlKemPolicy::Require
        } else {
            MlKemPolicy::Off
        },
        ..InitiatorConfig::default()
    };
    let mut init = Initiator::new(
        cred.clone(),
        icfg,
        scripted(&run["initiator_random"]),
        None,
        server,
        Some(lt),
    )
    .unwrap();

    init.initiate(now).unwrap();
    let out = init.datagrams_to_send();
    assert_eq!(out.len(), 1);
    let m1 = out[0].0.clone();
    assert_eq!(m1, hex(&msgs["msg1"]), "message 1");

    // the responder's PRF output (over compact(message 1)) and the NACK it would send
    let Ok(Request::HardenedInit(parsed)) = parse_request_untrusted(&m1) else {
        panic!()
    };
    let compact1 = compact_init(&parsed).into_owned();
    let tick = run["tick"].as_u64().unwrap();
    let mut prf = ResponderPrf::new(&server_secret);
    assert_eq!(
        prf.prf(tick, &client, &compact1).to_vec(),
        hex(&inter["responder_prf"])
    );
    let mut ss = Vec::new();
    if mlkem {
        assert_eq!(compact1, hex(&inter["msg1_compact"]));
        let seed: [u8; 64] = hex(&run["initiator_random"][if x25519 { 4 } else { 3 }])
            .try_into()
            .unwrap();
        let key = MlKemKey::from_seed(&seed).unwrap();
        assert_eq!(key.encapsulation_key(), &hex(&inter["mlkem_ek"])[..]);
        let m: [u8; 32] = hex(&run["responder_kem_random"][0]).try_into().unwrap();
        let (ct, s) = mlkem_encapsulate_deterministic(key.encapsulation_key(), &m).unwrap();
        assert_eq!(ct, hex(&inter["mlkem_ct"]));
        assert_eq!(s.to_vec(), hex(&inter["mlkem_shared_secret"]));
        assert_eq!(key.decapsulate(&ct).unwrap().to_vec(), s.to_vec());
        ss = s.to_vec();
    } else {
        assert_eq!(compact1, m1);
    }
    assert_eq!(
        build_nack(&parsed.header.spi_i, &ZERO_SPI, 0),
        hex(&msgs["nack1"])
    );

    resp.receive_datagram(&m1, &client, now).unwrap();
    let Some(ResponderEvent::CredentialNeeded {
        token,
        handle: h,
        addr: a,
    }) = resp.next_event()
    else {
        panic!("no CredentialNeeded")
    };
    assert_eq!((h, a), (cred.handle().to_vec(), client));
    resp.provide_credential(token, Some(cred.clone()), Some(lt), now)
        .unwrap();
    let out = resp.datagrams_to_send();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, client);
    let m2 = out[0].0.clone();
    assert_eq!(m2, hex(&msgs["msg2"]), "message 2");

    // intermediate key schedule values
    let dh = if x25519 {
        hex(&inter["dh"])
    } else {
        Vec::new()
    };
    let mut rs = RunSecrets::new(
        &cred,
        &hex(&run["initiator_random"][1]),
        &hex(&inter["nonce_r"]),
        &dh,
        &ss,
    );
    assert_eq!(rs.prk().to_vec(), hex(&inter["prk"]));
    assert_eq!(rs.mac_i().to_vec(), hex(&inter["mac_key_i"]));
    assert_eq!(rs.mac_r().to_vec(), hex(&inter["mac_key_r"]));
    let spi_i2r = inter["esp_spi_i2r"].as_u64().unwrap() as u32;
    let spi_r2i = inter["esp_spi_r2i"].as_u64().unwrap() as u32;
    let keymat = rs.keymat(spi_i2r, spi_r2i, 2 * p.keymat_len());
    assert_eq!(keymat.to_vec(), hex(&inter["keymat"]));
    assert_eq!(
        rs.successor_secret().to_vec(),
        hex(&inter["successor_secret"])
    );

    init.receive_datagram(&m2, now);
    let out = init.datagrams_to_send();
    assert_eq!(out.len(), 1);
    let m3 = out[0].0.clone();
    assert_eq!(m3, hex(&msgs["msg3"]), "message 3");
    let Some(InitiatorEvent::Complete(done_i)) = init.next_event() else {
        panic!("initiator")
    };

    resp.receive_datagram(&m3, &client, now).unwrap();
    let Some(ResponderEvent::CredentialNeeded { token, .. }) = resp.next_event() else {
        panic!("no second CredentialNeeded")
    };
    resp.provide_credential(token, Some(cred.clone()), Some(lt), now)
        .unwrap();
    let Some(ResponderEvent::CommitNeeded {
        token,
        generation,
        successor,
        ..
    }) = resp.next_event()
    else {
        panic!("no CommitNeeded")
    };
    assert_eq!(generation, cred.generation());
    assert_eq!(successor.handle(), &hex(&inter["successor_handle"])[..]);
    assert_eq!(successor.secret(), &hex(&inter["successor_secret"])[..]);
    assert_eq!(
        successor.generation() as u64,
        v["result"]["successor_generation"].as_u64().unwrap()
    );
    assert_eq!(
        successor.lineage().name(),
        v["result"]["successor_lineage"]
            .as_str()
            .unwrap_or("unknown")
    );
    resp.commit_result(token, true, now).unwrap();
    let Some(ResponderEvent::Complete(done_r)) = resp.next_event() else {
        panic!("responder")
    };
    for done in [&done_i, &done_r] {
        assert_eq!(done.sa.i_to_r, dk(&v["result"]["i_to_r"]));
        assert_eq!(done.sa.r_to_i, dk(&v["result"]["r_to_i"]));
        assert_eq!(done.sa.lifetimes, lt);
        assert_eq!(done.successor, successor);
    }
    // the same message 3 again is a replay: dropped without a lookup
    resp.receive_datagram(&m3, &client, now).unwrap();
    assert!(resp.next_event().is_none());
    assert!(resp.datagrams_to_send().is_empty());
    assert_eq!(
        resp.stats
            .get(ikeresume_native::stats::Stat::DropReplayedMsg3),
        1
    );
}

#[test]
fn hardened_vectors_replay_byte_for_byte() {
    let vs = load("hardened.json");
    assert!(!vs.is_empty());
    for v in &vs {
        replay(v);
    }
}

#[test]
fn hardened_x25519_vectors_replay_byte_for_byte() {
    let vs = load("hardened-x25519.json");
    assert!(!vs.is_empty());
    for v in &vs {
        assert!(v["intermediate"].get("dh").is_some());
        replay(v);
    }
}

#[test]
fn hardened_mlkem768_vectors_replay_byte_for_byte() {
    for name in ["hardened-mlkem768.json", "hardened-x25519-mlkem768.json"] {
        let vs = load(name);
        assert!(!vs.is_empty());
        for v in &vs {
            assert!(v["intermediate"].get("mlkem_ct").is_some());
            replay(v);
        }
    }
}
