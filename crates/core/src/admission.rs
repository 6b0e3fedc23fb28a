//! Admission of new connections, so that unauthenticated sockets cannot starve real clients.
//!
//! A connection is *pending* from accept until it is authenticated: its PROXY header, TLS
//! or WebSocket handshake, CONNECT and authentication all happen while pending. Pending
//! connections have their own bounds, in total ([`Limits::max_pending_connections`]) and per
//! source address ([`Limits::max_pending_per_address`]); when a bound is reached, the
//! *oldest* pending connection (of that address, or overall) is dropped to make room. A real
//! client completes its CONNECT in milliseconds, so it is never the oldest for long, while
//! sockets that never send CONNECT are evicted by newcomers.
//!
//! A connection takes its place in [`Limits::max_connections`] (and its listener's cap) only
//! when it is authenticated ([`Slots`]), so pending sockets never fill those either. A
//! client authenticated while the broker is full is refused with CONNACK 0x89 Server busy
//! (3.1.1: 0x03 Server unavailable).
//!
//! [`Limits::max_pending_connections`]: crate::Limits::max_pending_connections
//! [`Limits::max_pending_per_address`]: crate::Limits::max_pending_per_address
//! [`Limits::max_connections`]: crate::Limits::max_connections

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::codec::ReasonCode;
use crate::config::Limits;
use crate::metrics::Metrics;

/// The pending connections of one broker, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Oldest first; ids increase, so the queue is sorted by id.
    queue: VecDeque<Entry>,
    per_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    addr: Option<IpAddr>,
    evict: CancellationToken,
}

impl Inner {
    /// Removes the entry at `index`; returns it.
    fn remove_at(&mut self, index: usize) -> Option<Entry> {
        let entry = self.queue.remove(index)?;
        if let Some(ip) = entry.addr {
            if let hashbrown::hash_map::Entry::Occupied(mut n) = self.per_address.entry(ip) {
                *n.get_mut() -= 1;
                if *n.get() == 0 {
                    n.remove();
                }
            }
        }
        Some(entry)
    }

    fn evict_at(&mut self, index: usize, metrics: &Metrics) {
        if let Some(entry) = self.remove_at(index) {
            entry.evict.cancel();
            Metrics::inc(&metrics.connections_evicted);
            tracing::debug!(peer = ?entry.addr, "oldest pending connection dropped to make room");
        }
    }
}

impl Admissions {
    /// Registers a new pending connection from `addr`, first dropping the oldest pending
    /// connection of the same address, or the oldest of all, if a bound is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        addr: Option<IpAddr>,
        limits: &Limits,
        metrics: &Metrics,
    ) -> Ticket {
        let mut inner = self.inner.lock();
        if let Some(ip) = addr {
            let here = inner.per_address.get(&ip).copied().unwrap_or(0);
            if here >= limits.max_pending_per_address.max(1) {
                if let Some(i) = inner.queue.iter().position(|e| e.addr == Some(ip)) {
                    inner.evict_at(i, metrics);
                }
            }
        }
        while inner.queue.len() >= limits.max_pending_connections.max(1) {
            inner.evict_at(0, metrics);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let evict = CancellationToken::new();
        inner.queue.push_back(Entry {
            id,
            addr,
            evict: evict.clone(),
        });
        if let Some(ip) = addr {
            *inner.per_address.entry(ip).or_insert(0) += 1;
        }
        Ticket {
            id,
            evict,
            admissions: Arc::clone(self),
        }
    }

    /// Pending connections now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Counts a pending connection under `addr` from now on (the client address a PROXY
    /// header revealed), making room under that address's bound as [`Admissions::admit`]
    /// does. Nothing if the connection is no longer pending.
    fn rekey(&self, id: u64, addr: IpAddr, limits: &Limits, metrics: &Metrics) {
        let mut inner = self.inner.lock();
        let Ok(i) = inner.queue.binary_search_by_key(&id, |e| e.id) else {
            return;
        };
        if inner.queue[i].addr == Some(addr) {
            return;
        }
        if let Some(old) = inner.queue[i].addr {
            if let hashbrown::hash_map::Entry::Occupied(mut n) = inner.per_address.entry(old) {
                *n.get_mut() -= 1;
                if *n.get() == 0 {
                    n.remove();
                }
            }
        }
        inner.queue[i].addr = Some(addr);
        *inner.per_address.entry(addr).or_insert(0) += 1;
        if inner.per_address.get(&addr).copied().unwrap_or(0)
            > limits.max_pending_per_address.max(1)
        {
            // The oldest of that address makes room (it may be this one).
            if let Some(j) = inner.queue.iter().position(|e| e.addr == Some(addr)) {
                inner.evict_at(j, metrics);
            }
        }
    }

    fn forget(&self, id: u64) {
        let mut inner = self.inner.lock();
        if let Ok(i) = inner.queue.binary_search_by_key(&id, |e| e.id) {
            inner.remove_at(i);
        }
    }
}

/// A pending connection's place; dropping it (or [`Ticket::finish`]) gives the place up.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    evict: CancellationToken,
    admissions: Arc<Admissions>,
}

impl Ticket {
    /// Cancelled when the connection is evicted to make room.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.evict
    }

    /// The client turned out to be at `addr` (a PROXY header): its place is counted under
    /// that address from now on.
    pub(crate) fn rekey(&self, addr: IpAddr, limits: &Limits, metrics: &Metrics) {
        self.admissions.rekey(self.id, addr, limits, metrics);
    }

    /// The connection is no longer pending (authenticated, or ending). Idempotent; once
    /// finished it can no longer be evicted.
    pub(crate) fn finish(&self) {
        self.admissions.forget(self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A listener's connection counter and cap.
#[derive(Debug, Clone)]
pub(crate) struct ListenerCap {
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) max: usize,
}

/// One open connection counted against its listener's cap; released on drop.
#[derive(Debug)]
pub(crate) struct ListenerCount(Arc<AtomicUsize>);

impl ListenerCap {
    /// Takes a place, or `None` when the listener is full.
    pub(crate) fn take(&self) -> Option<ListenerCount> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ListenerCount(Arc::clone(&self.open)))
    }
}

impl Drop for ListenerCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection places of one broker: the pending connections and the authenticated ones
/// (`max_connections`).
#[derive(Debug)]
pub(crate) struct Admission {
    pending: Arc<Admissions>,
    open: Arc<AtomicUsize>,
    max_connections: usize,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// No connection yet; at most `max_connections` authenticated ones.
    pub(crate) fn new(max_connections: usize, metrics: Arc<Metrics>) -> Self {
        Admission {
            pending: Arc::new(Admissions::default()),
            open: Arc::new(AtomicUsize::new(0)),
            max_connections,
            metrics,
        }
    }

    /// Registers a new pending (not yet authenticated) connection from `source`, dropping
    /// the oldest pending one if a bound of `limits` is reached.
    pub(crate) fn admit(&self, source: Option<IpAddr>, limits: &Limits) -> Ticket {
        self.pending.admit(source, limits, &self.metrics)
    }

    /// True when `max_connections` authenticated connections are open.
    pub(crate) fn connections_full(&self) -> bool {
        self.open.load(Ordering::Acquire) >= self.max_connections
    }

    /// Takes a connection place, or `None` when `max_connections` are open.
    fn open_slot(&self) -> Option<ConnectionSlot> {
        let max = self.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(Arc::clone(&self.open)))
    }

    /// An authenticated connection leaves the pending ones (its `ticket`) and takes its
    /// places: one of `max_connections` and one of its listener's `cap`. In-process clients
    /// take none. `Err` is the CONNACK code refusing it when the broker (or the listener,
    /// named `listener`) is full.
    pub(crate) fn graduate(
        &self,
        ticket: Option<&Ticket>,
        in_process: bool,
        cap: Option<&ListenerCap>,
        listener: &str,
    ) -> Result<Slots, ReasonCode> {
        if let Some(ticket) = ticket {
            ticket.finish();
        }
        if in_process {
            return Ok(Slots::default());
        }
        let Some(slot) = self.open_slot() else {
            Metrics::inc(&self.metrics.connections_refused);
            tracing::info!("max_connections reached: connection refused");
            return Err(ReasonCode::ServerBusy);
        };
        let here = match cap {
            Some(cap) => match cap.take() {
                Some(count) => Some(count),
                None => {
                    Metrics::inc(&self.metrics.connections_refused);
                    tracing::info!(%listener, "listener connection cap reached: connection refused");
                    return Err(ReasonCode::ServerBusy);
                }
            },
            None => None,
        };
        Ok(Slots {
            _connection: Some(slot),
            _listener: here,
        })
    }
}

/// One of `max_connections`, released when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The places an authenticated connection holds for its lifetime: one of
/// `max_connections`, and one of its listener's cap. In-process clients hold none.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    _connection: Option<ConnectionSlot>,
    _listener: Option<ListenerCount>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> Limits {
        Limits {
            max_pending_connections: total,
            max_pending_per_address: per_address,
            ..Limits::default()
        }
    }

    /// Issue 12 §3: a full pending set makes room by dropping its oldest member, per
    /// address first; finished tickets leave no trace.
    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let admissions = Arc::new(Admissions::default());
        let metrics = Metrics::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let l = limits(3, 2);
        let a1 = admissions.admit(Some(a), &l, &metrics);
        let a2 = admissions.admit(Some(a), &l, &metrics);
        let b1 = admissions.admit(Some(b), &l, &metrics);
        assert_eq!(admissions.len(), 3);
        // A third from `a`: a's oldest goes (per-address bound).
        let a3 = admissions.admit(Some(a), &l, &metrics);
        assert!(a1.evicted().is_cancelled());
        assert!(!a2.evicted().is_cancelled() && !b1.evicted().is_cancelled());
        // Total bound: the oldest of all goes.
        let c1 = admissions.admit(None, &l, &metrics);
        assert!(a2.evicted().is_cancelled());
        assert_eq!(admissions.len(), 3);
        // Finishing (authenticated) frees a place without evicting anyone.
        b1.finish();
        let _c2 = admissions.admit(None, &l, &metrics);
        assert!(!a3.evicted().is_cancelled() && !c1.evicted().is_cancelled());
        drop((a1, a2, b1, a3, c1));
        assert_eq!(admissions.len(), 1);
        assert_eq!(metrics.snapshot().connections_evicted, 2);
        assert!(admissions.inner.lock().per_address.is_empty());
    }

    /// Behind a load balancer, a pending connection is counted under the address its
    /// PROXY header names, so the per-address bound applies to the real clients.
    #[test]
    fn a_proxy_header_moves_a_pending_connection_to_its_real_address() {
        let admissions = Arc::new(Admissions::default());
        let metrics = Metrics::default();
        let l = limits(10, 1);
        let balancer: IpAddr = "192.0.2.1".parse().expect("ip");
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        // Admitted without an address (behind the balancer), then re-keyed.
        let first = admissions.admit(None, &l, &metrics);
        first.rekey(client, &l, &metrics);
        let second = admissions.admit(None, &l, &metrics);
        second.rekey(client, &l, &metrics);
        assert!(first.evicted().is_cancelled(), "one pending per address");
        assert!(!second.evicted().is_cancelled());
        let other = admissions.admit(None, &l, &metrics);
        other.rekey(balancer, &l, &metrics);
        assert!(!other.evicted().is_cancelled());
        drop((first, second, other));
        assert!(admissions.inner.lock().per_address.is_empty());
    }
}
