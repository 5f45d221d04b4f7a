//! The ranks' host-side meeting point: a TCP star around rank 0 that does the rendezvous (and so
//! hands out NCCL's unique id), the small host collectives (sums, gathers, barriers) and the
//! failure protocol. A rank that fails says so ([`Hub::fail`]) or simply exits; rank 0 then tells
//! every other rank which one it was, and every rank stops with that error instead of hanging.
//! Every read and write has a timeout.
//!
//! Rank 0 combines in rank order (its own contribution first), so a sum is the same bits on every
//! rank and does not depend on arrival order.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::ParallelError;

/// Message kinds on the wire: `[kind u8][len u64 LE][payload]`.
const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const DATA: u8 = 3;
/// A rank's own failure, sent to rank 0 (payload: the reason).
const FAIL: u8 = 4;
/// Rank 0's notice to every rank that rank `r` failed (payload: `r` as u64, then the reason).
const ABORT: u8 = 5;
/// Protocol version in the hello: ranks of different pcc builds do not mix.
const VERSION: u64 = 1;
/// No message is larger (a corrupt length must not allocate terabytes).
const MAX_LEN: u64 = 1 << 40;

/// Rank 0's listening socket, bound before the other ranks are started (for `--gpus`, whose
/// threads learn the port from [`Listener::addr`]).
pub struct Listener {
    listener: TcpListener,
    addr: String,
}

/// One rank's connection(s) to the others.
pub struct Hub {
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Rank 0: the sockets of ranks 1.. (index r − 1). Other ranks: the socket to rank 0.
    links: Vec<TcpStream>,
    /// Set once a collective failed: the hub is then unusable and says why.
    broken: Option<(usize, String)>,
}

impl Listener {
    /// Listen on `addr`'s port on every interface (`MASTER_ADDR` names this host as the others
    /// reach it, which need not be an address it can bind); `127.0.0.1:0` picks a free
    /// loopback port.
    pub fn bind(addr: &str) -> Result<Listener, ParallelError> {
        let err = |reason: String| ParallelError::Rendezvous { addr: addr.to_string(), reason };
        let sock = addr.to_socket_addrs().map_err(|e| err(format!("cannot resolve: {e}")))?.next().ok_or_else(|| err("resolves to no address".into()))?;
        let local = if sock.ip().is_loopback() { sock } else { std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), sock.port()) };
        let listener = TcpListener::bind(local)
            .map_err(|e| err(format!("rank 0 cannot listen on port {}: {e} (another run on this port? set MASTER_PORT)", sock.port())))?;
        let port = listener.local_addr().map_err(|e| err(e.to_string()))?.port();
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        Ok(Listener { listener, addr: format!("{host}:{port}") })
    }

    /// Where the other ranks connect.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Rank 0's side of the rendezvous: wait (up to `timeout`) for ranks 1..size to say hello,
    /// then welcome them all.
    pub fn accept(self, size: usize, timeout: Duration) -> Result<Hub, ParallelError> {
        let deadline = Instant::now() + timeout;
        let mut links: Vec<Option<TcpStream>> = (1..size).map(|_| None).collect();
        self.listener.set_nonblocking(true).map_err(|e| self.err(e.to_string()))?;
        while links.iter().any(Option::is_none) {
            match self.listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).map_err(|e| self.err(e.to_string()))?;
                    configure(&s, timeout).map_err(|e| self.err(e.to_string()))?;
                    // A connection that is not a pcc rank (a port probe) is dropped; a rank of
                    // another run or build is an error.
                    let Ok((kind, body)) = read_msg(&mut s) else { continue };
                    if kind != HELLO || body.len() != 24 {
                        continue;
                    }
                    let r = check_hello(&body, size).map_err(|reason| self.err(format!("{peer}: {reason}")))?;
                    if links[r - 1].is_some() {
                        return Err(self.err(format!("two processes say they are rank {r} (check RANK)")));
                    }
                    links[r - 1] = Some(s);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = (1..size).filter(|r| links[r - 1].is_none()).map(|r| r.to_string()).collect();
                        let who = if missing.len() == 1 { "rank" } else { "ranks" };
                        return Err(self.err(format!("{who} {} did not join within {} s", missing.join(", "), timeout.as_secs())));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(self.err(e.to_string())),
            }
        }
        let mut links: Vec<TcpStream> = links.into_iter().map(|s| s.expect("all joined")).collect();
        for s in &mut links {
            write_msg(s, WELCOME, &[]).map_err(|e| self.err(e.to_string()))?;
        }
        Ok(Hub { rank: 0, size, timeout, links, broken: None })
    }

    fn err(&self, reason: String) -> ParallelError {
        ParallelError::Rendezvous { addr: self.addr.clone(), reason }
    }
}

impl Hub {
    /// A rank's side of the rendezvous: connect to rank 0 at `addr` (retrying until `timeout`,
    /// since rank 0 may start later), say hello and wait for the welcome.
    pub fn join(addr: &str, rank: usize, size: usize, timeout: Duration) -> Result<Hub, ParallelError> {
        assert!(rank > 0 && rank < size, "rank 0 accepts; ranks 1..size join");
        let err = |reason: String| ParallelError::Rendezvous { addr: addr.to_string(), reason };
        let deadline = Instant::now() + timeout;
        let mut s = loop {
            let last = match addr.to_socket_addrs() {
                Ok(mut a) => match a.next() {
                    Some(sock) => match TcpStream::connect_timeout(&sock, Duration::from_secs(5)) {
                        Ok(s) => break s,
                        Err(e) => e.to_string(),
                    },
                    None => "resolves to no address".into(),
                },
                Err(e) => format!("cannot resolve: {e}"),
            };
            if Instant::now() > deadline {
                return Err(err(format!("rank {rank} could not reach rank 0 within {} s: {last}", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        configure(&s, timeout).map_err(|e| err(e.to_string()))?;
        let hello: Vec<u8> = [VERSION, rank as u64, size as u64].iter().flat_map(|x| x.to_le_bytes()).collect();
        write_msg(&mut s, HELLO, &hello).map_err(|e| err(e.to_string()))?;
        match read_msg(&mut s) {
            Ok((WELCOME, _)) => Ok(Hub { rank, size, timeout, links: vec![s], broken: None }),
            Ok((kind, _)) => Err(err(format!("unexpected message {kind} instead of the welcome"))),
            Err(e) if is_timeout(&e) => Err(ParallelError::Timeout { rank: 0, what: "the rendezvous", secs: timeout.as_secs() }),
            Err(e) => Err(err(format!("rank 0 closed the connection before the welcome ({e}); see its error"))),
        }
    }

    /// The hub of a one-rank world (every collective is the identity).
    pub fn single() -> Hub {
        Hub { rank: 0, size: 1, timeout: super::world::DEFAULT_TIMEOUT, links: Vec::new(), broken: None }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every rank contributes `mine`; rank 0 combines the contributions (rank order, its own
    /// first) with `combine` and every rank gets the result.
    pub fn exchange(&mut self, mine: Vec<u8>, combine: impl FnOnce(Vec<Vec<u8>>) -> Vec<u8>) -> Result<Vec<u8>, ParallelError> {
        if let Some((rank, reason)) = &self.broken {
            return Err(ParallelError::RankFailed { rank: *rank, reason: reason.clone() });
        }
        let out = if self.rank == 0 { self.exchange_root(mine, combine) } else { self.exchange_leaf(mine) };
        if let Err(e) = &out {
            let rank = match e {
                ParallelError::RankFailed { rank, .. } | ParallelError::Timeout { rank, .. } => *rank,
                _ => self.rank,
            };
            self.broken = Some((rank, e.to_string()));
        }
        out
    }

    fn exchange_root(&mut self, mine: Vec<u8>, combine: impl FnOnce(Vec<Vec<u8>>) -> Vec<u8>) -> Result<Vec<u8>, ParallelError> {
        let mut all = vec![mine];
        for r in 1..self.size {
            let got = read_msg(&mut self.links[r - 1]);
            let failure = match got {
                Ok((DATA, body)) => {
                    all.push(body);
                    continue;
                }
                Ok((FAIL, body)) => ParallelError::RankFailed { rank: r, reason: String::from_utf8_lossy(&body).into_owned() },
                Ok((kind, _)) => ParallelError::RankFailed { rank: r, reason: format!("sent message {kind} out of turn (a different pcc build?)") },
                Err(e) if is_timeout(&e) => ParallelError::Timeout { rank: r, what: "a collective", secs: self.timeout.as_secs() },
                Err(e) => ParallelError::RankFailed { rank: r, reason: format!("exited (connection closed: {e})") },
            };
            self.abort_all(r, &failure.to_string());
            return Err(failure);
        }
        let result = combine(all);
        for r in 1..self.size {
            if let Err(e) = write_msg(&mut self.links[r - 1], DATA, &result) {
                let failure = ParallelError::RankFailed { rank: r, reason: format!("exited (connection closed: {e})") };
                self.abort_all(r, &failure.to_string());
                return Err(failure);
            }
        }
        Ok(result)
    }

    fn exchange_leaf(&mut self, mine: Vec<u8>) -> Result<Vec<u8>, ParallelError> {
        let s = &mut self.links[0];
        let sent = write_msg(s, DATA, &mine);
        // Read even when the write failed: rank 0 may have sent an abort that says why.
        match read_msg(s) {
            Ok((DATA, body)) if sent.is_ok() => Ok(body),
            Ok((ABORT, body)) if body.len() >= 8 => {
                let rank = u64::from_le_bytes(body[..8].try_into().expect("8 bytes")) as usize;
                Err(ParallelError::RankFailed { rank, reason: String::from_utf8_lossy(&body[8..]).into_owned() })
            }
            Ok((kind, _)) => Err(ParallelError::RankFailed { rank: 0, reason: format!("sent message {kind} out of turn (a different pcc build?)") }),
            Err(e) if is_timeout(&e) => Err(ParallelError::Timeout { rank: 0, what: "a collective", secs: self.timeout.as_secs() }),
            Err(e) => Err(ParallelError::RankFailed { rank: 0, reason: format!("exited (connection closed: {e})") }),
        }
    }

    /// Rank 0: tell every rank still connected that rank `failed` failed (best effort).
    fn abort_all(&mut self, failed: usize, reason: &str) {
        let mut body = (failed as u64).to_le_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        for (i, s) in self.links.iter_mut().enumerate() {
            if i + 1 != failed {
                let _ = write_msg(s, ABORT, &body);
            }
        }
    }

    /// This rank failed with `reason`: tell the others (best effort) so they stop too. The hub
    /// is unusable afterwards.
    pub fn fail(&mut self, reason: &str) {
        if self.broken.is_some() {
            return;
        }
        if self.rank == 0 {
            self.abort_all(0, reason);
        } else {
            let _ = write_msg(&mut self.links[0], FAIL, reason.as_bytes());
        }
        self.broken = Some((self.rank, reason.to_string()));
    }

    /// Wait until every rank gets here.
    pub fn barrier(&mut self) -> Result<(), ParallelError> {
        self.exchange(Vec::new(), |_| Vec::new()).map(drop)
    }

    /// Element-wise sum of every rank's `data` (same length everywhere), in place.
    pub fn all_reduce_f64(&mut self, data: &mut [f64]) -> Result<(), ParallelError> {
        if self.size == 1 {
            return Ok(());
        }
        let n = data.len();
        let mine: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut lengths_differ = None;
        let out = self.exchange(mine, |all| {
            let mut acc = f64s(&all[0]);
            for (r, b) in all.iter().enumerate().skip(1) {
                if b.len() != 8 * n {
                    lengths_differ = Some((r, b.len() / 8));
                    return Vec::new();
                }
                acc.iter_mut().zip(f64s(b)).for_each(|(a, x)| *a += x);
            }
            acc.iter().flat_map(|x| x.to_le_bytes()).collect()
        })?;
        if let Some((r, m)) = lengths_differ {
            return Err(ParallelError::Mismatch(format!("rank {r} reduces {m} values, rank 0 {n}")));
        }
        if out.len() != 8 * n {
            return Err(ParallelError::Mismatch(format!("rank 0 sent {} values for {n}", out.len() / 8)));
        }
        data.iter_mut().zip(f64s(&out)).for_each(|(d, x)| *d = x);
        Ok(())
    }

    /// Rank 0 gets every rank's `mine` concatenated in rank order; the others get `None`.
    pub fn gather_f32(&mut self, mine: &[f32]) -> Result<Option<Vec<f32>>, ParallelError> {
        let bytes = self.gather_bytes(mine.iter().flat_map(|x| x.to_le_bytes()).collect())?;
        Ok(bytes.map(|all| all.iter().flat_map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))).collect()))
    }

    /// Rank 0 gets every rank's `mine` in rank order; the others get `None`.
    pub fn gather_bytes(&mut self, mine: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, ParallelError> {
        if self.size == 1 {
            return Ok(Some(vec![mine]));
        }
        let mut gathered = None;
        self.exchange(mine, |all| {
            gathered = Some(all);
            Vec::new()
        })?;
        Ok(gathered)
    }

    /// Rank 0's `bytes` on every rank (the others pass anything).
    pub fn broadcast(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, ParallelError> {
        if self.size == 1 {
            return Ok(bytes);
        }
        self.exchange(if self.rank == 0 { bytes } else { Vec::new() }, |mut all| all.swap_remove(0))
    }

    /// Every rank's `value`, in rank order, on every rank.
    pub fn all_gather_u64(&mut self, value: u64) -> Result<Vec<u64>, ParallelError> {
        if self.size == 1 {
            return Ok(vec![value]);
        }
        let out = self.exchange(value.to_le_bytes().to_vec(), |all| all.concat())?;
        Ok(out.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    }
}

fn f64s(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

fn configure(s: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))
}

fn check_hello(body: &[u8], size: usize) -> Result<usize, String> {
    let v: Vec<u64> = body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    if v[0] != VERSION {
        return Err(format!("speaks protocol {} (this rank {VERSION}): run the same pcc build on every rank", v[0]));
    }
    let (rank, theirs) = (v[1] as usize, v[2] as usize);
    if theirs != size {
        return Err(format!("rank {rank} was started with WORLD_SIZE={theirs}, rank 0 with {size}"));
    }
    if rank == 0 || rank >= size {
        return Err(format!("says it is rank {rank} of {size}"));
    }
    Ok(rank)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn write_msg(s: &mut TcpStream, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = kind;
    head[1..].copy_from_slice(&(body.len() as u64).to_le_bytes());
    s.write_all(&head)?;
    s.write_all(body)?;
    s.flush()
}

fn read_msg(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    if len > MAX_LEN {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("message of {len} bytes")));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    Ok((head[0], body))
}
