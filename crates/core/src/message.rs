//! Application messages as the broker holds them: decoded once, shared by every subscriber.
//!
//! A [`Message`] is built from an incoming PUBLISH and wrapped in an `Arc`; each queue entry
//! is a small [`Delivery`] pointing at it. The payload is the `Bytes` slice of the read
//! buffer it arrived in, never copied. The encoded wire forms are cached on the message, so a
//! PUBLISH is encoded once per distinct form (protocol level × with/without packet id), not
//! once per subscriber.

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{
    EncodeError, EncodedPublish, PacketId, ProtocolVersion, Publish, PublishProperties, PublishQoS,
    QoS,
};
use crate::topic::TopicName;

/// A message in the broker, shared between all the queues it sits in.
#[derive(Debug)]
pub struct Message {
    /// Topic Name.
    pub topic: TopicName,
    /// Application payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// v5 properties to forward (never a Topic Alias or Subscription Identifiers: those are
    /// per connection and per subscription).
    pub properties: PublishProperties,
    /// The client that published it (`None` for wills of vanished sessions and `$SYS`).
    pub publisher: Option<ByteString>,
    /// When it was received.
    pub received_at: Instant,
    forms: [OnceLock<Result<EncodedPublish, EncodeError>>; 4],
}

impl Message {
    /// A message with the given fields and no properties.
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: PublishProperties::default(),
            publisher: None,
            received_at: Instant::now(),
            forms: Default::default(),
        }
    }

    /// Builds a message from a PUBLISH received from `publisher`, dropping the per-hop
    /// properties (Topic Alias, Subscription Identifiers).
    pub fn from_publish(publish: Publish, publisher: Option<ByteString>) -> Self {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Self {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos.qos(),
            retain: publish.retain,
            properties,
            publisher,
            received_at: Instant::now(),
            forms: Default::default(),
        }
    }

    /// Size counted against queue byte budgets: topic plus payload.
    pub fn size(&self) -> usize {
        self.topic.as_str().len() + self.payload.len()
    }

    /// The PUBLISH for one delivery (payload shared, not copied).
    pub fn to_publish(
        &self,
        qos: PublishQoS,
        retain: bool,
        dup: bool,
        sids: &[NonZeroU32],
    ) -> Publish {
        let mut properties = self.properties.clone();
        properties.subscription_identifiers = sids.to_vec();
        Publish {
            dup,
            qos,
            retain,
            topic: self.topic.clone(),
            properties,
            payload: self.payload.clone(),
        }
    }

    /// The cached encoded form for `version`, with or without a packet identifier. Only for
    /// deliveries without per-subscriber properties (no Subscription Identifiers).
    pub(crate) fn encoded(
        &self,
        version: ProtocolVersion,
        with_id: bool,
    ) -> Result<&EncodedPublish, EncodeError> {
        let slot = usize::from(version.is_v5()) * 2 + usize::from(with_id);
        let form = self.forms[slot].get_or_init(|| {
            let qos = if with_id {
                PublishQoS::AtLeastOnce(PacketId::MIN)
            } else {
                PublishQoS::AtMostOnce
            };
            EncodedPublish::new(&self.to_publish(qos, false, false, &[]), version)
        });
        form.as_ref().map_err(Clone::clone)
    }
}

/// One entry of a session's queue: a shared message and how to deliver it to this session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS for this subscriber: the message's QoS capped by the granted QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription Identifiers of the matching subscriptions (v5).
    pub subscription_ids: Vec<NonZeroU32>,
}
