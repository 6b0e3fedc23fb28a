//! The broker's lifecycle events as an async stream
//! ([`BrokerHandle::events`](crate::BrokerHandle::events)), for
//! applications that need I/O per event (webhooks, audit logs) without blocking the
//! synchronous [`Hooks`].
//!
//! Each stream has its own bounded buffer. The broker never waits for a reader: an event
//! that finds a stream's buffer full is dropped for that stream and counted
//! ([`Events::dropped`], and `events_dropped` in the metrics). With no stream open the
//! broker does no work for events at all. An event owns its strings (never a slice of a
//! packet's read buffer), so a full stream holds its events' bytes and nothing more.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::codec::{QoS, ReasonCode};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::plugin::{ClientInfo, DisconnectReason, DropReason, Hooks};
use crate::topic::{TopicFilter, TopicName};

/// Something that happened in the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client connected (CONNACK sent).
    Connected {
        /// Who: client identifier, identity, protocol level, listener, peer.
        client: Arc<ClientInfo>,
    },
    /// A client's connection ended.
    Disconnected {
        /// Who.
        client: Arc<ClientInfo>,
        /// Why.
        reason: DisconnectReason,
    },
    /// A subscription was added (or replaced).
    Subscribed {
        /// Client identifier.
        client_id: ByteString,
        /// The filter.
        filter: TopicFilter,
        /// The QoS granted.
        granted: QoS,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// Client identifier.
        client_id: ByteString,
        /// The filter.
        filter: TopicFilter,
    },
    /// A session was created (not resumed).
    SessionCreated {
        /// Client identifier.
        client_id: ByteString,
    },
    /// A session's Session Expiry Interval passed after its client went away.
    SessionExpired {
        /// Client identifier.
        client_id: ByteString,
    },
    /// A message did not reach a subscriber.
    MessageDropped {
        /// The subscriber.
        client_id: ByteString,
        /// The message's topic.
        topic: TopicName,
        /// Why.
        reason: DropReason,
    },
    /// A client failed to authenticate.
    AuthenticationFailed {
        /// The client identifier it connected with.
        client_id: ByteString,
        /// The user name it claimed.
        username: Option<ByteString>,
        /// Its address (none in-process).
        peer: Option<std::net::SocketAddr>,
        /// The CONNACK reason code it got.
        reason: ReasonCode,
    },
}

/// One open stream's sending side and what it lost.
#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

/// Fans events out to the open streams. Shared by the hook chain (which calls it like a
/// hook) and the handle (which opens streams).
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    subscribers: Mutex<Vec<Subscriber>>,
    /// Some stream is open (read on every hook call without the lock).
    active: AtomicBool,
    metrics: Mutex<Option<Arc<Metrics>>>,
}

impl EventHub {
    /// True if some stream is open.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn open(&self, capacity: usize, metrics: Arc<Metrics>) -> Events {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subscribers = self.subscribers.lock();
        subscribers.push(Subscriber {
            tx,
            dropped: Arc::clone(&dropped),
        });
        *self.metrics.lock() = Some(metrics);
        self.active.store(true, Ordering::Relaxed);
        Events { rx, dropped }
    }

    /// Ends every stream (at shutdown): readers get what is buffered, then `None`.
    pub(crate) fn close(&self) {
        self.subscribers.lock().clear();
        self.active.store(false, Ordering::Relaxed);
    }

    /// Offers `event` to every open stream; a full one loses it (counted), a closed one is
    /// forgotten.
    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if !self.active() {
            return;
        }
        let event = event();
        let mut subscribers = self.subscribers.lock();
        let mut lost = 0;
        subscribers.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                lost += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subscribers.is_empty() {
            self.active.store(false, Ordering::Relaxed);
        }
        drop(subscribers);
        if lost > 0 {
            if let Some(metrics) = &*self.metrics.lock() {
                Metrics::add(&metrics.events_dropped, lost);
            }
        }
    }
}

/// A copy of `s` in a buffer of its own: an event may wait in a stream long after the
/// packet whose read buffer `s` may be a slice of.
fn own(s: &ByteString) -> ByteString {
    ByteString::from(&**s)
}

/// The client, its strings in buffers of their own (see [`own`]).
fn owned_client(client: &ClientInfo) -> Arc<ClientInfo> {
    let mut copy = client.clone();
    copy.client_id = own(&client.client_id);
    copy.claimed_username = client.claimed_username.as_ref().map(own);
    Arc::new(copy)
}

impl Hooks for EventHub {
    fn client_connected(&self, client: &ClientInfo) {
        self.emit(|| Event::Connected {
            client: owned_client(client),
        });
    }

    fn client_disconnected(&self, client: &ClientInfo, reason: DisconnectReason) {
        self.emit(|| Event::Disconnected {
            client: owned_client(client),
            reason,
        });
    }

    fn subscribed(&self, client: &ClientInfo, filter: &TopicFilter, granted: QoS) {
        self.emit(|| Event::Subscribed {
            client_id: own(&client.client_id),
            filter: filter.owned(),
            granted,
        });
    }

    fn unsubscribed(&self, client: &ClientInfo, filter: &TopicFilter) {
        self.emit(|| Event::Unsubscribed {
            client_id: own(&client.client_id),
            filter: filter.owned(),
        });
    }

    fn message_dropped(&self, client_id: &str, message: &Message, reason: DropReason) {
        self.emit(|| Event::MessageDropped {
            client_id: client_id.into(),
            topic: message.topic.owned(),
            reason,
        });
    }

    fn session_created(&self, client_id: &str) {
        self.emit(|| Event::SessionCreated {
            client_id: client_id.into(),
        });
    }

    fn session_expired(&self, client_id: &str) {
        self.emit(|| Event::SessionExpired {
            client_id: client_id.into(),
        });
    }
}

/// A stream of [`Event`]s (see the module docs for the overflow policy).
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// The next event; `None` once the broker has shut down and the buffer is empty.
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Events this stream lost because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_own_their_strings() {
        // A client identifier that is a slice of a larger read buffer.
        let buffer = bytes::Bytes::from_static(b"....client-7....");
        let slice = ByteString::try_from(buffer.slice(4..12)).expect("utf-8");
        let owned = own(&slice);
        assert_eq!(owned, slice);
        assert_ne!(owned.as_bytes().as_ptr(), slice.as_bytes().as_ptr());
    }
}
