//! The alert writer's table of open de-duplication windows, bounded: a scan of N ports would
//! otherwise open N windows and keep them for the whole window length. Windows are kept in the
//! order they opened, so expiry and eviction both take the oldest first, without a scan.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One open window: the first occurrence was written, repeats are counted.
#[derive(Debug)]
pub struct Window<T> {
    /// When it opened.
    pub opened: Instant,
    /// Time of the first occurrence (RFC 3339).
    pub first_seen: String,
    /// Time of the last occurrence (RFC 3339).
    pub last_seen: String,
    /// Occurrences after the first.
    pub repeats: u64,
    /// The last occurrence's alert.
    pub last: T,
    /// Opening sequence number (tells a live entry of the order queue from a stale one).
    seq: u64,
}

/// Open windows by flow key, at most `capacity`.
#[derive(Debug)]
pub struct Windows<T> {
    open: HashMap<String, Window<T>>,
    order: VecDeque<(u64, String)>,
    next_seq: u64,
    capacity: usize,
}

impl<T> Windows<T> {
    /// An empty table holding at most `capacity` windows (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { open: HashMap::new(), order: VecDeque::new(), next_seq: 0, capacity: capacity.max(1) }
    }

    /// Windows open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The open window of `key`, if any.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Window<T>> {
        self.open.get_mut(key)
    }

    /// Whether a new window needs room made first.
    pub fn is_full(&self) -> bool {
        self.open.len() >= self.capacity
    }

    /// Opens a window for `key` (the caller made room and checked that none is open).
    pub fn open(&mut self, key: String, opened: Instant, time: &str, last: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, key.clone()));
        let window = Window { opened, first_seen: time.to_owned(), last_seen: time.to_owned(), repeats: 0, last, seq };
        self.open.insert(key, window);
    }

    /// Removes and returns the oldest window if `take(window)` says so (or none is left).
    pub fn pop_oldest_if(&mut self, take: impl Fn(&Window<T>) -> bool) -> Option<(String, Window<T>)> {
        while let Some((seq, key)) = self.order.front() {
            match self.open.get(key) {
                Some(w) if w.seq == *seq => {
                    if !take(w) {
                        return None;
                    }
                    let (_, key) = self.order.pop_front()?;
                    let w = self.open.remove(&key)?;
                    return Some((key, w));
                }
                // A stale entry: its window was closed already.
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Removes and returns the oldest window opened `length` or more before `now`.
    pub fn pop_expired(&mut self, now: Instant, length: Duration) -> Option<(String, Window<T>)> {
        self.pop_oldest_if(|w| now.duration_since(w.opened) >= length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_and_bounded() {
        let mut w = Windows::new(2);
        let t0 = Instant::now();
        w.open("a".into(), t0, "t0", ());
        w.open("b".into(), t0 + Duration::from_secs(1), "t1", ());
        assert!(w.is_full());
        assert_eq!(w.pop_oldest_if(|_| true).map(|(k, _)| k).as_deref(), Some("a"));
        w.open("c".into(), t0 + Duration::from_secs(2), "t2", ());
        assert_eq!(
            w.pop_expired(t0 + Duration::from_secs(10), Duration::from_secs(9)).map(|(k, _)| k).as_deref(),
            Some("b")
        );
        assert!(w.pop_expired(t0 + Duration::from_secs(10), Duration::from_secs(9)).is_none(), "c is 8 s old");
        assert_eq!(w.len(), 1);
    }
}
