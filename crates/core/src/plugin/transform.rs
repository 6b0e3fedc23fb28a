//! [`DeliveryTransform`]: a per-subscriber form of a message, made as it is written to
//! that subscriber.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use super::ClientInfo;
use crate::codec::PublishProperties;
use crate::message::Message;
use crate::metrics::Metrics;

/// What a [`DeliveryTransform`] makes of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transformed {
    /// Send the message as it is.
    Unchanged,
    /// Send this payload and these properties instead (topic, QoS, RETAIN and the
    /// remaining expiry stay the message's).
    Replaced {
        /// The payload this subscriber gets.
        payload: Bytes,
        /// The properties it gets (start from a clone of the message's).
        properties: PublishProperties,
    },
    /// Do not send it to this subscriber: the delivery is dropped and counted
    /// (`messages_withheld`), and the hooks see
    /// [`DropReason::NotAuthorized`](super::DropReason::NotAuthorized). For a transform
    /// that cannot make the form a subscriber must get (no key for it, say): never send
    /// what it should not see.
    Withheld,
}

/// Changes what one subscriber receives: called by that subscriber's connection for each
/// PUBLISH it is about to send, every time it is sent (a re-sent QoS 1/2 message is
/// transformed again), so a transform may make each copy unique (a fresh nonce).
///
/// [`Hooks::message_published`](super::Hooks::message_published) changes a message for
/// everyone; a transform changes it for one subscriber, which then gets a PUBLISH encoded
/// for it alone. Subscribers for which every transform answers
/// [`Transformed::Unchanged`] share the one encoding as usual. The stored and queued
/// message stays as published: a transform's output is never stored.
///
/// A form larger than the subscriber's Maximum Packet Size is dropped (counted as too
/// large) before it is given a packet identifier.
///
/// Transforms run inline in the subscriber's writer, under its session lock: they must be
/// quick and must not block. They run in registration order, each on the output of the
/// one before. A transform that panics withholds the delivery (fail closed) and counts as
/// a plugin failure.
pub trait DeliveryTransform: Send + Sync + 'static {
    /// The form of `message` that `client` gets.
    fn transform(&self, client: &ClientInfo, message: &Message) -> Transformed;
}

/// The registered transforms.
#[derive(Default, Clone)]
pub(crate) struct TransformChain {
    transforms: Vec<Arc<dyn DeliveryTransform>>,
}

impl std::fmt::Debug for TransformChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformChain")
            .field("transforms", &self.transforms.len())
            .finish()
    }
}

impl TransformChain {
    pub(crate) fn push(&mut self, transform: Arc<dyn DeliveryTransform>) {
        self.transforms.push(transform);
    }

    /// No transform registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// The message `client` gets: `Ok(None)` for the message itself, `Ok(Some(form))` for a
    /// form of its own, `Err(())` if it must not be sent.
    pub(crate) fn apply(
        &self,
        metrics: &Metrics,
        client: &ClientInfo,
        message: &Arc<Message>,
    ) -> Result<Option<Arc<Message>>, ()> {
        let mut current: Option<Arc<Message>> = None;
        for t in &self.transforms {
            let m = current.as_ref().unwrap_or(message);
            match catch_unwind(AssertUnwindSafe(|| t.transform(client, m))) {
                Ok(Transformed::Unchanged) => {}
                Ok(Transformed::Replaced {
                    payload,
                    properties,
                }) => current = Some(m.with_payload(payload, properties)),
                Ok(Transformed::Withheld) => return Err(()),
                Err(_) => {
                    Metrics::inc(&metrics.plugin_failures);
                    tracing::warn!("a delivery transform panicked; delivery withheld");
                    return Err(());
                }
            }
        }
        Ok(current)
    }
}
