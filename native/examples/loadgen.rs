//! Load generator for the responder service (bench/bench_native_server.py drives it): many
//! concurrent resumptions with the native initiator engine, from many loopback source
//! addresses, open loop at a rate or closed loop with a window of exchanges outstanding,
//! optionally beside a flood of garbage and replayed message 1s from many more addresses.
//! A Python generator cannot offer 50,000 resumptions/s; this one runs one thread per role
//! (legitimate load, flood) pinned to one CPU.
//!
//!     cargo run --release --features server --example loadgen -- \
//!         --server 127.0.0.1:4501 --creds creds.jsonl --duration 5 [--rate 25000] \
//!         [--window 512] [--sources 512] [--x25519 1] [--flood-rate 0] \
//!         [--flood-sources 4096] [--warmup 1] [--cpu 1]
//!
//! `creds.jsonl`: one credential per line, `{"handle": HEX, "generation": N, "secret":
//! HEX, "id_i": HEX, "id_r": HEX, "params": "<canonical params JSON>"}` (the bench writes
//! it from the same records it stores at the responder).  The ratchet is followed in
//! memory: each completion replaces a slot's credential by its successor and keeps the
//! one used as the previous generation (a lost message 3 costs one retry, never a slot).
//!
//! Output: a line `{"phase": "measure"}` when the warm-up ends, then one JSON object with
//! the measured window's counts, latencies (message 1 sent -> valid message 2, i.e. keys
//! in hand) and this process's CPU.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ikeresume_native::credential::{Credential, ProtocolMode};
use ikeresume_native::events::InitiatorEvent;
use ikeresume_native::initiator::{Initiator, InitiatorConfig};
use ikeresume_native::rng::RandomSource;
use ikeresume_native::store::params::parse_params;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use serde_json::{json, Value};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn process_cpu_s() -> f64 {
    // utime + stime of the whole process, in clock ticks (100 Hz on Linux)
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

struct Args {
    server: SocketAddr,
    creds: String,
    duration: f64,
    warmup: f64,
    rate: f64,
    window: usize,
    sources: usize,
    x25519: bool,
    flood_rate: f64,
    flood_sources: usize,
    cpu: Option<usize>,
    rto: f64,
    timeout: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:4501".parse().expect("default"),
        creds: String::new(),
        duration: 5.0,
        warmup: 1.0,
        rate: 0.0,
        window: 512,
        sources: 512,
        x25519: true,
        flood_rate: 0.0,
        flood_sources: 4096,
        cpu: None,
        rto: 0.2,
        timeout: 2.0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let (k, v) = (argv[i].as_str(), argv[i + 1].as_str());
        let f = || v.parse::<f64>().expect("a number");
        let u = || v.parse::<usize>().expect("an integer");
        match k {
            "--server" => a.server = v.parse().expect("HOST:PORT"),
            "--creds" => a.creds = v.to_owned(),
            "--duration" => a.duration = f(),
            "--warmup" => a.warmup = f(),
            "--rate" => a.rate = f(),
            "--window" => a.window = u(),
            "--sources" => a.sources = u(),
            "--x25519" => a.x25519 = v != "0",
            "--flood-rate" => a.flood_rate = f(),
            "--flood-sources" => a.flood_sources = u(),
            "--cpu" => a.cpu = Some(u()),
            "--rto" => a.rto = f(),
            "--timeout" => a.timeout = f(),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    assert!(!a.creds.is_empty(), "--creds FILE is required");
    a
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn hex(v: &Value, k: &str) -> Vec<u8> {
    let s = v[k].as_str().expect("hex field");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load_creds(path: &str) -> Vec<Credential> {
    let f = std::fs::File::open(path).expect("credentials file");
    let mut memo: HashMap<String, Arc<ikeresume_native::credential::SaParams>> = HashMap::new();
    std::io::BufReader::new(f)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(&l.expect("line")).expect("json");
            let ptext = v["params"].as_str().expect("params").to_owned();
            let params = memo
                .entry(ptext.clone())
                .or_insert_with(|| Arc::new(parse_params(&ptext).expect("params")))
                .clone();
            Credential::new(
                ProtocolMode::Hardened,
                hex(&v, "handle"),
                u32::try_from(v["generation"].as_u64().expect("generation")).expect("u32"),
                hex(&v, "secret"),
                hex(&v, "id_i"),
                hex(&v, "id_r"),
                params,
            )
            .expect("credential")
        })
        .collect()
}

fn source(i: usize, net: u8) -> IpAddr {
    let last = 1 + (i % 254) as u8;
    let rest = i / 254;
    IpAddr::V4(Ipv4Addr::new(127, net, (rest & 255) as u8, last))
}

struct Slot {
    cred: Credential,
    prev: Option<Credential>,
    busy: bool,
}

struct Ex {
    ini: Initiator<SocketAddr>,
    slot: usize,
    t0: Instant,
    measured: bool,
}

#[derive(Default)]
struct Stats {
    started: u64,
    resumed: u64,
    nack: u64,
    timeout: u64,
    lat: Vec<f64>,
}

struct Gen {
    server: SocketAddr,
    socks: Vec<UdpSocket>,
    epoll: Epoll,
    slots: Vec<Slot>,
    next_slot: usize,
    live: HashMap<(usize, [u8; 8]), Ex>,
    timers: BinaryHeap<Reverse<(u64, usize, [u8; 8])>>,
    cfg: InitiatorConfig,
    seq: u64,
    captured: Arc<Mutex<Vec<Vec<u8>>>>,
    measuring: bool,
    st: Stats,
    buf: Vec<u8>,
}

fn spi_of(d: &[u8]) -> [u8; 8] {
    let mut s = [0u8; 8];
    if let Some(src) = d.get(..8) {
        s.copy_from_slice(src);
    }
    s
}

impl Gen {
    fn send(&self, sock: usize, out: Vec<(Vec<u8>, SocketAddr)>) {
        if let Some(s) = self.socks.get(sock) {
            for (d, _) in out {
                let _ = s.send_to(&d, self.server);
            }
        }
    }

    fn arm(&mut self, key: (usize, [u8; 8])) {
        if let Some(t) = self.live.get(&key).and_then(|e| e.ini.get_timer()) {
            self.timers.push(Reverse(((t * 1e6) as u64, key.0, key.1)));
        }
    }

    fn start(&mut self) -> bool {
        let n = self.slots.len();
        let mut tries = 0;
        while self.slots[self.next_slot % n].busy {
            self.next_slot += 1;
            tries += 1;
            if tries > n {
                return false; // every credential is in flight
            }
        }
        let si = self.next_slot % n;
        self.next_slot += 1;
        let sock = (self.seq as usize) % self.socks.len();
        self.seq += 1;
        let slot = &mut self.slots[si];
        slot.busy = true;
        let rng = RandomSource::Seeded {
            seed: self.seq.to_be_bytes().to_vec(),
            counter: 0,
        };
        let mut ini = Initiator::new(
            slot.cred.clone(),
            self.cfg.clone(),
            rng,
            slot.prev.clone(),
            self.server,
            None,
        )
        .expect("initiator");
        ini.initiate(now_s()).expect("initiate");
        let out = ini.datagrams_to_send();
        let spi = out.first().map(|(d, _)| spi_of(d)).unwrap_or_default();
        if let Ok(mut c) = self.captured.lock() {
            if c.len() < 64 {
                if let Some((d, _)) = out.first() {
                    c.push(d.clone());
                }
            }
        }
        self.send(sock, out);
        let key = (sock, spi);
        self.live.insert(
            key,
            Ex {
                ini,
                slot: si,
                t0: Instant::now(),
                measured: self.measuring,
            },
        );
        if self.measuring {
            self.st.started += 1;
        }
        self.arm(key);
        true
    }

    /// Events of one exchange; true when it ended.
    fn events(&mut self, key: (usize, [u8; 8])) -> bool {
        let Some(ex) = self.live.get_mut(&key) else {
            return true;
        };
        let mut ended = false;
        while let Some(ev) = ex.ini.next_event() {
            match ev {
                InitiatorEvent::Complete(c) => {
                    let slot = &mut self.slots[ex.slot];
                    slot.prev = Some(ex.ini.credential().clone());
                    slot.cred = c.successor;
                    if ex.measured {
                        self.st.resumed += 1;
                        self.st.lat.push(ex.t0.elapsed().as_secs_f64());
                    }
                    ended = true;
                }
                InitiatorEvent::Fallback(r) => {
                    if ex.measured {
                        if r == "nack" {
                            self.st.nack += 1;
                        } else {
                            self.st.timeout += 1;
                        }
                    }
                    ended = true;
                }
            }
        }
        if ended {
            let out = ex.ini.datagrams_to_send(); // message 3
            let slot = ex.slot;
            self.send(key.0, out);
            self.slots[slot].busy = false;
            self.live.remove(&key);
        }
        ended
    }

    fn readable(&mut self, sock: usize) {
        loop {
            let Some(s) = self.socks.get(sock) else {
                return;
            };
            let n = match s.recv(&mut self.buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let data = self.buf[..n].to_vec();
            let key = (sock, spi_of(&data));
            let Some(ex) = self.live.get_mut(&key) else {
                continue;
            };
            let used_prev = ex.ini.used_previous();
            ex.ini.receive_datagram(&data, now_s());
            let out = ex.ini.datagrams_to_send();
            if ex.ini.used_previous() != used_prev {
                // NACK -> retry with the previous generation under a new SPI
                let ex = self.live.remove(&key).expect("present");
                let nk = (
                    sock,
                    out.first().map(|(d, _)| spi_of(d)).unwrap_or_default(),
                );
                self.live.insert(nk, ex);
                self.send(sock, out);
                self.arm(nk);
                continue;
            }
            self.send(sock, out); // message 3 (or message 3 again)
            self.events(key);
        }
    }

    fn timers(&mut self) {
        let now = now_s();
        let now_us = (now * 1e6) as u64;
        // the due timers first, then their handling: an exchange re-armed at a time already
        // past is handled at the next call, never in a loop here
        let mut due = Vec::new();
        while let Some(Reverse((t, s, spi))) = self.timers.peek().copied() {
            if t > now_us {
                break;
            }
            self.timers.pop();
            due.push((s, spi));
        }
        for key in due {
            let Some(ex) = self.live.get_mut(&key) else {
                continue;
            };
            ex.ini.handle_timer(now);
            let out = ex.ini.datagrams_to_send();
            self.send(key.0, out);
            if !self.events(key) {
                self.arm(key);
            }
        }
    }

    fn run(&mut self, seconds: f64, rate: f64, window: usize) {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(seconds);
        let mut next_start = t0;
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if rate <= 0.0 {
                while self.live.len() < window && self.start() {}
            } else {
                let step = Duration::from_secs_f64(1.0 / rate);
                let mut n = 0;
                while next_start <= now && n < 1024 {
                    if !self.start() {
                        break;
                    }
                    next_start += step;
                    n += 1;
                }
            }
            let wait_ms: u16 = if rate > 0.0 {
                u16::from(next_start > Instant::now())
            } else {
                1
            };
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(wait_ms))
                .unwrap_or(0);
            for ev in events.iter().take(n) {
                self.readable(ev.data() as usize);
            }
            self.timers();
        }
        // let the exchanges in flight finish (bounded)
        let drain_end = Instant::now() + Duration::from_secs(3);
        while !self.live.is_empty() && Instant::now() < drain_end {
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(1u16))
                .unwrap_or(0);
            for ev in events.iter().take(n) {
                self.readable(ev.data() as usize);
            }
            self.timers();
        }
    }
}

fn flood(
    server: SocketAddr,
    rate: f64,
    sources: usize,
    until: Instant,
    msg1s: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let socks: Vec<UdpSocket> = (0..sources)
        .filter_map(|i| {
            let s = UdpSocket::bind(SocketAddr::new(source(i, 20), 0)).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        })
        .collect();
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..1024 {
        let len = 28 + (rnd() % 372) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 2 == 0 {
            // a header that passes admission, a body that does not parse
            d[..16].fill(0);
            d[16..20].copy_from_slice(&[33, 0x20, 240, 0x08]);
            d[20..24].fill(0);
            d[24..28].copy_from_slice(&(len as u32).to_be_bytes());
        }
        garbage.push(d);
    }
    let replay: Vec<Vec<u8>> = msg1s.lock().map(|v| v.clone()).unwrap_or_default();
    let t0 = Instant::now();
    let mut sent: u64 = 0;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let due = (t0.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let s = &socks[(sent as usize) % socks.len()];
            let d = if sent % 2 == 1 && !replay.is_empty() {
                &replay[(sent as usize / 2) % replay.len()]
            } else {
                &garbage[(sent as usize / 2) % garbage.len()]
            };
            let _ = s.send_to(d, server);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    sent
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((q * v.len() as f64) as usize).min(v.len() - 1);
    v[i]
}

fn main() {
    let a = parse_args();
    if let Some(c) = a.cpu {
        pin(c);
    }
    raise_fd_limit();
    let creds = load_creds(&a.creds);
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
    let mut socks = Vec::new();
    for i in 0..a.sources {
        let s = UdpSocket::bind(SocketAddr::new(source(i, 10), 0)).expect("bind a source");
        s.set_nonblocking(true).expect("nonblocking");
        epoll
            .add(s.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .expect("epoll add");
        socks.push(s);
    }
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut g = Gen {
        server: a.server,
        socks,
        epoll,
        slots: creds
            .into_iter()
            .map(|c| Slot {
                cred: c,
                prev: None,
                busy: false,
            })
            .collect(),
        next_slot: 0,
        live: HashMap::new(),
        timers: BinaryHeap::new(),
        cfg: InitiatorConfig {
            use_x25519: a.x25519,
            initial_rto: a.rto,
            max_retransmits: 3,
            timeout: a.timeout,
            ..InitiatorConfig::default()
        },
        seq: 0,
        captured: Arc::clone(&captured),
        measuring: false,
        st: Stats::default(),
        buf: vec![0u8; 4096],
    };
    g.run(a.warmup, a.rate, a.window);
    let stop = Arc::new(AtomicBool::new(false));
    let flood_thread = (a.flood_rate > 0.0).then(|| {
        let (server, rate, n, cpu) = (a.server, a.flood_rate, a.flood_sources, a.cpu);
        let until = Instant::now() + Duration::from_secs_f64(a.duration);
        let (m, s) = (Arc::clone(&captured), Arc::clone(&stop));
        std::thread::spawn(move || {
            if let Some(c) = cpu {
                pin(c);
            }
            flood(server, rate, n, until, m, s)
        })
    });
    println!("{}", json!({"phase": "measure"}));
    let _ = std::io::stdout().flush();
    g.measuring = true;
    let cpu0 = process_cpu_s();
    let t0 = Instant::now();
    g.run(a.duration, a.rate, a.window);
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let flood_sent = flood_thread.map(|t| t.join().unwrap_or(0)).unwrap_or(0);
    let cpu = process_cpu_s() - cpu0;
    let st = &mut g.st;
    let mean = if st.lat.is_empty() {
        f64::NAN
    } else {
        st.lat.iter().sum::<f64>() / st.lat.len() as f64
    };
    let out = json!({
        "started": st.started,
        "resumed": st.resumed,
        "fallback": {"nack": st.nack, "timeout": st.timeout},
        "duration_s": a.duration,
        "wall_s": wall,
        "rate": st.resumed as f64 / a.duration,
        "offered_rate": a.rate,
        "cpu_s": cpu,
        "flood_sent": flood_sent,
        "latency_ms": {
            "n": st.lat.len(),
            "p50": pct(&mut st.lat, 0.5) * 1e3,
            "p99": pct(&mut st.lat, 0.99) * 1e3,
            "mean": mean * 1e3,
        },
    });
    println!("{out}");
}
