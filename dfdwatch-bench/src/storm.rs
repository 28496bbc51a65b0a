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

/// Opens `connections` connections to `to` from `parallel` threads; prints
/// `{"connections":N,"errors":E,"elapsed_ns":T}`.
pub fn storm(to: SocketAddr, connections: u64, parallel: u64) -> Result<()> {
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|t| {
            let errors = errors.clone();
            let share = connections / parallel + u64::from(t < connections % parallel);
            std::thread::spawn(move || {
                for _ in 0..share {
                    match TcpStream::connect(to) {
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
