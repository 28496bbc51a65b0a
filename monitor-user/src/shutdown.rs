//! The daemon's one way of stopping (after mini-redis): the daemon fires a [`Shutdown`] once;
//! every task at the head of the pipeline (the ring reader, the DFD reloader, the HTTP endpoint,
//! the Kubernetes watch) holds a [`ShutdownSignal`] and returns when it fires. The threaded stages
//! after the reader need no signal: each ends when its input queue closes, after passing on what
//! it holds, so stopping drains the pipeline in order and loses nothing.

use tokio::sync::watch;

/// Fires the shutdown, once, for every signal taken from it.
#[derive(Debug)]
pub struct Shutdown(watch::Sender<bool>);

/// A task's view of the shutdown: waits for it, or tells whether it fired.
#[derive(Clone, Debug)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown not yet fired.
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// A signal for one task.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.0.subscribe())
    }

    /// Fires it: every signal's [`ShutdownSignal::wait`] returns.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// Returns once the shutdown fired (or its [`Shutdown`] is gone).
    pub async fn wait(mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether the shutdown fired.
    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }

    /// For a stage on its own thread: sleeps for `period`, or less if the shutdown fires (seen
    /// within [`POLL`]); returns whether it fired.
    pub fn wait_blocking(&self, period: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + period;
        loop {
            if self.fired() {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(POLL));
        }
    }
}

/// How often a thread in [`ShutdownSignal::wait_blocking`] looks at the shutdown.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_sees_the_one_shutdown() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let shutdown = Shutdown::new();
        let (a, b) = (shutdown.signal(), shutdown.signal());
        assert!(!a.fired());
        shutdown.fire();
        rt.block_on(async {
            a.wait().await;
            b.wait().await;
        });
        assert!(shutdown.signal().fired(), "a signal taken after firing sees it fired");
    }
}
