//! The connection storm: `storm` opens and resets connections from parallel client threads as
//! fast as it can and prints the wall time; `sink` accepts and drops them. Clients close with
//! SO_LINGER 0 (a reset), so 100,000 connections do not exhaust the ports in TIME_WAIT; the sink
//! listens with a backlog of 4096, so no SYN is dropped and retried a second later.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};

/// Sets SO_LINGER {on, 0}: close sends a reset and leaves no TIME_WAIT.
fn reset_on_close(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a correctly sized, initialised option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A connection to `to` from the loopback source address numbered `i` (127.1.0.0 + i): each
/// connection its own flow (and its own alert window).
pub fn connect_from(to: SocketAddr, i: u64) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let src = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 1, 0, 0)) + i as u32);
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(to) = to else { return Err(std::io::Error::other("distinct sources need an IPv4 target")) };
    // SAFETY: plain socket calls on a fresh fd, with correctly sized sockaddr_in values; the fd is
    // owned by the TcpStream from then on (or closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sockaddr(src, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Opens `connections` connections to `to` from `parallel` threads, each from 127.0.0.1, or
/// with `distinct` each from its own loopback address (every connection a new flow); prints
/// `{"connections":N,"errors":E,"elapsed_ns":T}`.
pub fn storm(to: SocketAddr, connections: u64, parallel: u64, distinct: bool) -> Result<()> {
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|t| {
            let errors = errors.clone();
            let share = connections / parallel + u64::from(t < connections % parallel);
            std::thread::spawn(move || {
                for i in 0..share {
                    let stream = if distinct { connect_from(to, i * parallel + t) } else { TcpStream::connect(to) };
                    match stream {
                        Ok(s) => reset_on_close(&s),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a storm thread panicked"))?;
    }
    let elapsed = started.elapsed();
    let line = serde_json::json!({
        "connections": connections,
        "errors": errors.load(Ordering::Relaxed),
        "elapsed_ns": elapsed.as_nanos() as u64,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(())
}

/// Accepts and drops connections on `listen` until killed, from two threads.
pub fn sink(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    // std listens with a backlog of 128: a storm overflows it and each overflow costs a client a
    // 1 s SYN retransmission. Listening again raises the backlog (capped by net.core.somaxconn).
    // SAFETY: a valid listening socket fd.
    if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
        return Err(std::io::Error::last_os_error()).context("raise the listen backlog");
    }
    let listener = Arc::new(listener);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let l = listener.clone();
            std::thread::spawn(move || {
                loop {
                    let _ = l.accept();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
