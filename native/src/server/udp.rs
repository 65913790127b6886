//! One UDP socket read and written in batches: `recvmmsg(2)` into buffers made once,
//! `sendmmsg(2)` from the engine's datagrams with no copy (under NAT-T the four-byte
//! non-ESP marker is a second iovec).  IPv4 and IPv6 (v6-only sockets), `SO_REUSEPORT` for
//! sibling workers, the socket buffers asked of the kernel.
//!
//! NAT-T framing (RFC 3948 2.2): on a port shared with ESP-in-UDP an IKE datagram starts
//! with four zero bytes; anything else -- ESP, a lone 0xFF keepalive -- is dropped here and
//! counted (`natt_not_ike`, `natt_keepalive`), as `resume/net/udp.py` does.
//!
//! Steady state allocates nothing per datagram: the receive buffers, the kernel headers,
//! the address array and the results list are reused; only the per-batch iovec arrays are
//! built per call.  The syscalls go through nix's safe wrappers; nothing here parses a
//! datagram (the engine's `_untrusted` parsers do).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders, SockaddrStorage,
};

use crate::wire::{MAX_MESSAGE_LEN, NON_ESP_MARKER};

/// Largest datagram read: a maximal IKE message plus the marker plus one byte, so that a
/// longer one arrives truncated -- and is refused by the parser as too long.
pub const BUF_LEN: usize = MAX_MESSAGE_LEN + 4 + 1;

/// A NAT keepalive (RFC 3948 2.3).
const NATT_KEEPALIVE: u8 = 0xFF;

/// What the socket layer dropped or failed (`resume/net/udp.py`'s `drops`, plus totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    pub received: u64,
    pub sent: u64,
    pub natt_not_ike: u64,
    pub natt_keepalive: u64,
    pub socket_error: u64,
    pub no_address: u64,
}

/// How a socket is made.
#[derive(Debug, Clone)]
pub struct BindOptions {
    pub natt: bool,
    pub reuse_port: bool,
    /// SO_RCVBUF / SO_SNDBUF asked of the kernel (0: leave them); the kernel may cap them.
    pub buffer_bytes: usize,
    pub batch: usize,
}

pub struct UdpBatch {
    sock: UdpSocket,
    natt: bool,
    batch: usize,
    bufs: Vec<Vec<u8>>,
    rheaders: MultiHeaders<SockaddrStorage>,
    sheaders: MultiHeaders<SockaddrStorage>,
    /// (buffer index, payload start, payload end, peer) of the last receive
    got: Vec<(usize, usize, usize, SocketAddr)>,
    addrs: Vec<Option<SockaddrStorage>>,
    pub stats: UdpStats,
    /// send failures by errno name (`send_econnrefused`, ...)
    pub send_errors: Vec<(&'static str, u64)>,
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((a.ip(), a.port())));
    }
    s.as_sockaddr_in6()
        .map(|a| SocketAddr::from((a.ip(), a.port())))
}

fn errno_name(e: Errno) -> &'static str {
    match e {
        Errno::ECONNREFUSED => "send_econnrefused",
        Errno::ENETUNREACH => "send_enetunreach",
        Errno::EHOSTUNREACH => "send_ehostunreach",
        Errno::EMSGSIZE => "send_emsgsize",
        Errno::EACCES => "send_eacces",
        Errno::EPERM => "send_eperm",
        Errno::EINVAL => "send_einval",
        Errno::EAFNOSUPPORT => "send_eafnosupport",
        Errno::EADDRNOTAVAIL => "send_eaddrnotavail",
        Errno::ENOBUFS => "send_enobufs",
        _ => "send_error",
    }
}

/// Bind `addr` (IPv6: v6-only, as the Python endpoint does) with `opts`; non-blocking.
pub fn bind(addr: SocketAddr, opts: &BindOptions) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv6() {
        nix::sys::socket::AddressFamily::Inet6
    } else {
        nix::sys::socket::AddressFamily::Inet
    };
    let fd = nix::sys::socket::socket(
        domain,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if opts.reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if opts.buffer_bytes > 0 {
        // the kernel caps it (net.core.rmem_max); a smaller buffer still works
        let _ = setsockopt(&fd, sockopt::RcvBuf, &opts.buffer_bytes);
        let _ = setsockopt(&fd, sockopt::SndBuf, &opts.buffer_bytes);
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(UdpSocket::from(fd))
}

impl UdpBatch {
    /// As [`bind`], with the batch buffers.
    pub fn bind(addr: SocketAddr, opts: &BindOptions) -> io::Result<Self> {
        Ok(Self::from_socket(bind(addr, opts)?, opts.natt, opts.batch))
    }

    /// Wrap an already bound socket (made non-blocking here).
    pub fn from_socket(sock: UdpSocket, natt: bool, batch: usize) -> Self {
        let _ = sock.set_nonblocking(true);
        let batch = batch.clamp(1, 1024);
        UdpBatch {
            sock,
            natt,
            batch,
            bufs: vec![vec![0u8; BUF_LEN]; batch],
            rheaders: MultiHeaders::preallocate(batch, None),
            sheaders: MultiHeaders::preallocate(batch, None),
            got: Vec::with_capacity(batch),
            addrs: Vec::with_capacity(batch),
            stats: UdpStats::default(),
            send_errors: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Read what the kernel has queued, up to one batch, without blocking.  Returns the
    /// datagrams read (0: nothing queued); the IKE payloads are then in [`Self::received`].
    pub fn recv(&mut self) -> usize {
        self.got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let res = recvmmsg(
            self.sock.as_raw_fd(),
            &mut self.rheaders,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        );
        let mut read = 0;
        match res {
            Ok(msgs) => {
                for (i, m) in msgs.enumerate() {
                    read += 1;
                    match m.address.as_ref().and_then(to_socket_addr) {
                        Some(a) => self.got.push((i, 0, m.bytes.min(BUF_LEN), a)),
                        None => self.stats.no_address += 1,
                    }
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            // ICMP errors surfaced on the socket, or transient kernel trouble: keep serving
            Err(_) => self.stats.socket_error += 1,
        }
        self.stats.received += read as u64;
        if self.natt {
            let bufs = &self.bufs;
            let st = &mut self.stats;
            self.got.retain_mut(|(i, start, end, _)| {
                let data = bufs
                    .get(*i)
                    .and_then(|b| b.get(*start..*end))
                    .unwrap_or(&[]);
                if data.get(..4) == Some(&NON_ESP_MARKER[..]) {
                    *start += 4;
                    true
                } else {
                    if data == [NATT_KEEPALIVE] {
                        st.natt_keepalive += 1;
                    } else {
                        st.natt_not_ike += 1;
                    }
                    false
                }
            });
        }
        read
    }

    /// The IKE payloads of the last [`Self::recv`] (marker stripped) with their peers.
    pub fn received(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.got.iter().map(|(i, s, e, a)| {
            (
                self.bufs.get(*i).and_then(|b| b.get(*s..*e)).unwrap_or(&[]),
                *a,
            )
        })
    }

    /// Send `items` in batches; returns how many were consumed (sent, or dropped and
    /// counted for an error that concerns that peer only).  Fewer than `items.len()` means
    /// the socket buffer is full: wait for POLLOUT and call again with the rest.
    pub fn send(&mut self, items: &[(Vec<u8>, SocketAddr)]) -> usize {
        let mut done = 0;
        while done < items.len() {
            let end = (done + self.batch).min(items.len());
            let chunk = items.get(done..end).unwrap_or(&[]);
            self.addrs.clear();
            self.addrs
                .extend(chunk.iter().map(|(_, a)| Some(SockaddrStorage::from(*a))));
            let res = if self.natt {
                let slices: Vec<[IoSlice<'_>; 2]> = chunk
                    .iter()
                    .map(|(d, _)| [IoSlice::new(&NON_ESP_MARKER), IoSlice::new(d)])
                    .collect();
                sendmmsg(
                    self.sock.as_raw_fd(),
                    &mut self.sheaders,
                    &slices,
                    &self.addrs,
                    [],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|r| r.count())
            } else {
                let slices: Vec<[IoSlice<'_>; 1]> =
                    chunk.iter().map(|(d, _)| [IoSlice::new(d)]).collect();
                sendmmsg(
                    self.sock.as_raw_fd(),
                    &mut self.sheaders,
                    &slices,
                    &self.addrs,
                    [],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|r| r.count())
            };
            match res {
                Ok(n) if n > 0 => {
                    self.stats.sent += n as u64;
                    done += n;
                }
                Ok(_) | Err(Errno::EAGAIN) => return done,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // the first datagram of the chunk failed for its peer alone: drop it
                    self.count_send_error(errno_name(e));
                    done += 1;
                }
            }
        }
        done
    }

    fn count_send_error(&mut self, name: &'static str) {
        match self.send_errors.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.send_errors.push((name, 1)),
        }
    }
}
