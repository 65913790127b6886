//! PROTOTYPE (issue 13, next phase; not wired into the Python service): the responder
//! engine driven from a Rust UDP loop, without a Python round trip per datagram.
//!
//! * `UdpBatch` receives up to `batch` datagrams per `recvmmsg(2)` (MSG_WAITFORONE: blocks
//!   for the first, takes what else is queued) and sends a batch per `sendmmsg(2)`, IPv4 or
//!   IPv6, with the RFC 3948 non-ESP marker when `natt` (port 4500 framing: anything else on
//!   that port -- ESP, keepalives -- is dropped and counted, never handed to the engine).
//! * `serve_once` runs one receive batch through the engine, answers its requests from a
//!   [`CredentialSource`] (the later rusqlite store with the group-committed ratchet), and
//!   sends the outputs in one batch.  Completions are returned for the caller to hand over
//!   (to Python, in batches, for installs, hooks and metrics).
//!
//! The syscalls go through nix's safe wrappers; this module parses nothing itself (the
//! engine's `_untrusted` parsers do).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::credential::{Credential, Lifetimes};
use crate::events::{Completion, LocalError, ResponderEvent};
use crate::responder::Responder;
use crate::wire::{MAX_MESSAGE_LEN, NON_ESP_MARKER};

/// Largest datagram read: an IKE message of 2048 bytes plus the non-ESP marker; longer
/// ones are truncated by the kernel and then refused by the parser.
const BUF_LEN: usize = MAX_MESSAGE_LEN + 4 + 1;

/// Counters of the loop itself (the engine keeps its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub received: u64,
    pub sent: u64,
    pub dropped_not_ike: u64,
    pub dropped_no_address: u64,
    pub send_errors: u64,
}

/// One UDP socket read and written in batches.
pub struct UdpBatch {
    sock: UdpSocket,
    natt: bool,
    batch: usize,
    bufs: Vec<Vec<u8>>,
    pub stats: UdpStats,
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((a.ip(), a.port())));
    }
    s.as_sockaddr_in6()
        .map(|a| SocketAddr::from((a.ip(), a.port())))
}

impl UdpBatch {
    /// Bind `addr`; `natt`: RFC 3948 framing (port 4500); `batch`: datagrams per syscall;
    /// `wait`: how long `recv` blocks for the first datagram.
    pub fn bind(addr: SocketAddr, natt: bool, batch: usize, wait: Duration) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(wait))?;
        let batch = batch.clamp(1, 1024);
        Ok(UdpBatch {
            sock,
            natt,
            batch,
            bufs: vec![vec![0u8; BUF_LEN]; batch],
            stats: UdpStats::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Receive up to `batch` datagrams (blocks up to `wait` for the first); IKE payloads
    /// (marker stripped under NAT-T) go to `out`.  Returns the datagrams read (a timeout is
    /// Ok(0)); those dropped here are counted in `stats`.
    pub fn recv(&mut self, out: &mut Vec<(Vec<u8>, SocketAddr)>) -> io::Result<usize> {
        let mut headers: MultiHeaders<SockaddrStorage> =
            MultiHeaders::preallocate(self.batch, None);
        let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(self.batch);
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
                .bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let res = recvmmsg(
                self.sock.as_raw_fd(),
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            );
            match res {
                Ok(msgs) => {
                    for m in msgs {
                        got.push((m.bytes, m.address.as_ref().and_then(to_socket_addr)));
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(0),
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        let read = got.len();
        for (buf, (len, addr)) in self.bufs.iter().zip(got) {
            self.stats.received += 1;
            let Some(addr) = addr else {
                self.stats.dropped_no_address += 1;
                continue;
            };
            let data = buf.get(..len).unwrap_or(&[]);
            let payload = if self.natt {
                match data.split_first_chunk::<4>() {
                    Some((m, rest)) if *m == NON_ESP_MARKER => rest,
                    _ => {
                        self.stats.dropped_not_ike += 1;
                        continue;
                    }
                }
            } else {
                data
            };
            out.push((payload.to_vec(), addr));
        }
        Ok(read)
    }

    /// Send every datagram (the marker added under NAT-T), `batch` per syscall.
    pub fn send(&mut self, items: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let mut sent = 0;
        for chunk in items.chunks(self.batch) {
            let framed: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(d, _)| {
                    if self.natt {
                        [&NON_ESP_MARKER[..], d].concat()
                    } else {
                        d.clone()
                    }
                })
                .collect();
            let slices: Vec<[IoSlice<'_>; 1]> = framed.iter().map(|d| [IoSlice::new(d)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|(_, a)| Some(SockaddrStorage::from(*a)))
                .collect();
            let mut headers: MultiHeaders<SockaddrStorage> =
                MultiHeaders::preallocate(chunk.len(), None);
            match sendmmsg(
                self.sock.as_raw_fd(),
                &mut headers,
                &slices,
                &addrs,
                [],
                MsgFlags::empty(),
            ) {
                Ok(res) => {
                    let n = res.count();
                    sent += n;
                    self.stats.sent += n as u64;
                    self.stats.send_errors += (chunk.len() - n) as u64;
                }
                Err(e) => {
                    self.stats.send_errors += chunk.len() as u64;
                    return Err(io::Error::from(e));
                }
            }
        }
        Ok(sent)
    }
}

/// The store behind the engine: lookup by handle and the ratchet's compare-and-set.
pub trait CredentialSource {
    /// `None` for unknown, refused by policy or store unreachable (all fail closed).
    fn lookup(&mut self, handle: &[u8]) -> Option<(Credential, Option<Lifetimes>)>;
    /// Replace generation `generation` of `handle` by `successor` atomically; false when
    /// the record moved on (or the store failed): the engine then NACKs.
    fn commit(&mut self, handle: &[u8], generation: u32, successor: &Credential) -> bool;
}

/// One receive batch through the engine, requests answered from `store`, outputs sent in
/// one batch; completions appended to `completions`.  Returns the datagrams received.
pub fn serve_once<S: CredentialSource>(
    udp: &mut UdpBatch,
    engine: &mut Responder<SocketAddr>,
    store: &mut S,
    now: f64,
    completions: &mut Vec<Completion<SocketAddr>>,
) -> io::Result<usize> {
    let mut input = Vec::new();
    let n = udp.recv(&mut input)?;
    let local = |e: LocalError| io::Error::new(io::ErrorKind::InvalidInput, e.0);
    for (data, addr) in &input {
        engine.receive_datagram(data, addr, now).map_err(local)?;
    }
    // answering may raise further requests (message 3: credential, then commit)
    while let Some(ev) = engine.next_event() {
        match ev {
            ResponderEvent::CredentialNeeded { token, handle, .. } => {
                let (cred, lt) = match store.lookup(&handle) {
                    Some((c, lt)) => (Some(c), lt),
                    None => (None, None),
                };
                engine
                    .provide_credential(token, cred, lt, now)
                    .map_err(local)?;
            }
            ResponderEvent::CommitNeeded {
                token,
                handle,
                generation,
                successor,
            } => {
                let ok = store.commit(&handle, generation, &successor);
                engine.commit_result(token, ok, now).map_err(local)?;
            }
            ResponderEvent::Complete(c) => completions.push(*c),
            ResponderEvent::Failed { .. } => {}
        }
    }
    engine.handle_timer(now).map_err(local)?;
    let out = engine.datagrams_to_send();
    udp.send(&out)?;
    Ok(n)
}
