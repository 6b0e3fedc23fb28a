//! Back-off after failed authentication, per source address and per user name, so that
//! password guessing is slow and costs the broker little, while other clients are served.
//!
//! Each failed authentication (an authenticator's refusal, or nobody accepting a client that
//! gave credentials) counts against the client's address and the user name it claimed.
//! Before the next attempt from that address or for that name is checked, the connection
//! waits `base × 2^(failures − 1)`, capped at `max` (the larger of the two records counts).
//! The wait parks the connection's task, which stays a pending connection (see
//! [`crate::admission`]): it costs no CPU, and a flood of them is bounded by the pending
//! connections' own limits. A success clears both records; records idle for
//! [`FORGET_AFTER`] are forgotten, and at most [`MAX_RECORDS`] are kept (the stalest go
//! first), so the table's memory is bounded whatever clients send.

use std::net::IpAddr;
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

/// A record idle this long is forgotten (its failures no longer count).
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Records kept at most (addresses and user names together).
pub(crate) const MAX_RECORDS: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(Box<str>),
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// The failure records of one broker.
#[derive(Debug, Default)]
pub(crate) struct AuthThrottle {
    records: Mutex<HashMap<Key, Record>>,
}

fn keys(addr: Option<IpAddr>, user: Option<&str>) -> impl Iterator<Item = Key> {
    addr.map(Key::Addr)
        .into_iter()
        .chain(user.map(|u| Key::User(u.into())))
}

impl AuthThrottle {
    /// How long an attempt from `addr` for `user` waits before it is checked.
    pub(crate) fn delay(
        &self,
        addr: Option<IpAddr>,
        user: Option<&str>,
        base: Duration,
        max: Duration,
    ) -> Duration {
        if base.is_zero() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let records = self.records.lock();
        let failures = keys(addr, user)
            .filter_map(|k| records.get(&k))
            .filter(|r| now.duration_since(r.last) < FORGET_AFTER)
            .map(|r| r.failures)
            .max()
            .unwrap_or(0);
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(20);
        base.saturating_mul(factor).min(max)
    }

    /// Records a failed attempt.
    pub(crate) fn failed(&self, addr: Option<IpAddr>, user: Option<&str>) {
        let now = Instant::now();
        let mut records = self.records.lock();
        if records.len() + 2 > MAX_RECORDS {
            records.retain(|_, r| now.duration_since(r.last) < FORGET_AFTER);
            if records.len() + 2 > MAX_RECORDS {
                // Still full of fresh records: drop the stalest quarter at once, so the
                // cost is amortised over the insertions that fill it again.
                let mut ages: Vec<Instant> = records.values().map(|r| r.last).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 4];
                records.retain(|_, r| r.last > cutoff);
            }
        }
        for key in keys(addr, user) {
            let r = records.entry(key).or_insert(Record {
                failures: 0,
                last: now,
            });
            if now.duration_since(r.last) >= FORGET_AFTER {
                r.failures = 0;
            }
            r.failures = r.failures.saturating_add(1);
            r.last = now;
        }
    }

    /// Clears the records of a successful attempt.
    pub(crate) fn succeeded(&self, addr: Option<IpAddr>, user: Option<&str>) {
        let mut records = self.records.lock();
        if records.is_empty() {
            return;
        }
        for key in keys(addr, user) {
            records.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.lock().len()
    }
}

/// At most one log line per source address per [`LogLimiter::EVERY`], for events a client
/// can cause over and over (a refused TLS handshake). Bounded like [`AuthThrottle`].
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

impl LogLimiter {
    /// One line per address per minute.
    pub(crate) const EVERY: Duration = Duration::from_secs(60);

    /// True if something may be logged for `addr` now (and counts it).
    pub(crate) fn allow(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock();
        if let Some(t) = last.get(&addr) {
            if now.duration_since(*t) < Self::EVERY {
                return false;
            }
        }
        if last.len() >= MAX_RECORDS {
            last.retain(|_, t| now.duration_since(*t) < Self::EVERY);
            if last.len() >= MAX_RECORDS {
                last.clear();
            }
        }
        last.insert(addr, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn log_lines_are_limited_per_address() {
        let l = LogLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "::1".parse().expect("ip");
        assert!(l.allow(a));
        assert!(!l.allow(a), "again within the minute");
        assert!(l.allow(b), "another address");
        tokio::time::advance(LogLimiter::EVERY).await;
        assert!(l.allow(a), "a minute later");
    }

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// Issue 12 §3: failures slow further attempts from the address and for the user name,
    /// doubling up to a cap; a success clears them; the table stays bounded.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_per_address_and_per_user() {
        let t = AuthThrottle::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(t.delay(Some(a), Some("alice"), BASE, MAX), Duration::ZERO);
        t.failed(Some(a), Some("alice"));
        assert_eq!(t.delay(Some(a), None, BASE, MAX), BASE);
        // The same name from another address is slowed too, an unrelated client is not.
        assert_eq!(t.delay(Some(b), Some("alice"), BASE, MAX), BASE);
        assert_eq!(t.delay(Some(b), Some("bob"), BASE, MAX), Duration::ZERO);
        for _ in 0..10 {
            t.failed(Some(a), Some("alice"));
        }
        assert_eq!(t.delay(Some(a), None, BASE, MAX), MAX, "capped");
        t.succeeded(Some(a), Some("alice"));
        assert_eq!(t.delay(Some(a), Some("alice"), BASE, MAX), Duration::ZERO);
        // Forgotten after a while.
        t.failed(Some(b), None);
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(t.delay(Some(b), None, BASE, MAX), Duration::ZERO);
        // Bounded: many distinct guessers never grow the table past its cap.
        for i in 0..(MAX_RECORDS as u32 + 100) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())), None);
        }
        assert!(t.len() <= MAX_RECORDS);
        // Off when the base is zero.
        assert_eq!(
            t.delay(
                Some(IpAddr::from(5u32.to_be_bytes())),
                None,
                Duration::ZERO,
                MAX
            ),
            Duration::ZERO
        );
    }
}
