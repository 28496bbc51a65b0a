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
}

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
