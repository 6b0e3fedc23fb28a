//! Conversions between the broker's types and the storage crate's records.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use roost_storage::{
    MessageRecord, OwnerRecord, PropertiesRecord, QueueRecord, QueueStage, SessionRecord,
    SubscriptionRecord, WillRecord,
};
use tokio::time::Instant;

use crate::codec::{
    LastWill, PayloadFormat, PublishProperties, QoS, RetainHandling, SubscriptionOptions,
    UserProperty, WillProperties,
};
use crate::message::{Delivery, Message};
use crate::plugin::{ClientInfo, Identity};
use crate::session::{SessionState, SubscriptionRecord as CoreSubscription};
use crate::topic::{TopicFilter, TopicName};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A tokio instant as Unix milliseconds.
pub(crate) fn instant_to_unix_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ms = unix_now_ms();
    if at >= now {
        now_ms.saturating_add(u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX))
    } else {
        now_ms.saturating_sub(u64::try_from((now - at).as_millis()).unwrap_or(u64::MAX))
    }
}

/// Unix milliseconds as a tokio instant (clamped to now for the past).
pub(crate) fn unix_ms_to_instant(ms: u64) -> Instant {
    let now_ms = unix_now_ms();
    Instant::now() + Duration::from_millis(ms.saturating_sub(now_ms))
}

fn qos(v: u8) -> QoS {
    QoS::from_u8(v).unwrap_or(QoS::AtMostOnce)
}

fn properties_record(p: &PublishProperties) -> PropertiesRecord {
    PropertiesRecord {
        payload_format: p.payload_format_indicator.map(|f| f as u8),
        content_type: p.content_type.as_ref().map(|s| s.to_string()),
        response_topic: p.response_topic.as_ref().map(|t| t.to_string()),
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        user_properties: p
            .user_properties
            .iter()
            .map(|u| (u.name.to_string(), u.value.to_string()))
            .collect(),
    }
}

fn publish_properties(p: PropertiesRecord) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format.map(|f| {
            if f == 1 {
                PayloadFormat::Utf8
            } else {
                PayloadFormat::Unspecified
            }
        }),
        content_type: p.content_type.map(Into::into),
        response_topic: p.response_topic.and_then(|t| TopicName::new(t).ok()),
        correlation_data: p.correlation_data.map(Bytes::from),
        user_properties: p
            .user_properties
            .into_iter()
            .map(|(k, v)| UserProperty::new(k, v))
            .collect(),
        ..PublishProperties::default()
    }
}

/// The record of a message.
pub(crate) fn message_record(m: &Message) -> MessageRecord {
    MessageRecord {
        topic: m.topic.to_string(),
        payload: m.payload.to_vec(),
        qos: m.qos.as_u8(),
        retain: m.retain,
        properties: properties_record(&m.properties),
        publisher: m.publisher.as_ref().map(|p| p.to_string()),
        expires_at_ms: m.expires_at.map(instant_to_unix_ms),
    }
}

/// A message from its record; `None` if its topic is not valid any more.
pub(crate) fn message_from_record(r: MessageRecord) -> Option<Message> {
    let topic = TopicName::new(r.topic).ok()?;
    let mut m = Message::new(topic, Bytes::from(r.payload), qos(r.qos), r.retain);
    m.properties = publish_properties(r.properties);
    m.publisher = r.publisher.map(Into::into);
    m.expires_at = r.expires_at_ms.map(unix_ms_to_instant);
    Some(m)
}

/// The record of a queued delivery at `stage`.
pub(crate) fn queue_record(d: &Delivery, stage: QueueStage) -> QueueRecord {
    QueueRecord {
        message: message_record(&d.message),
        qos: d.qos.as_u8(),
        retain: d.retain,
        subscription_ids: d.subscription_ids.iter().map(|s| s.get()).collect(),
        stage,
        packet_id: d.packet_id.map(crate::codec::PacketId::get),
    }
}

/// A delivery from its record.
pub(crate) fn delivery_from_record(r: QueueRecord, seq: u64) -> Option<Delivery> {
    let message = message_from_record(r.message)?;
    let packet_id = r.packet_id.and_then(crate::codec::PacketId::new);
    Some(Delivery {
        packet_id,
        gate: 0,
        maybe_sent: false,
        // Authorized by another process, or under other rules: checked again when sent.
        authorized_epoch: 0,
        message: Arc::new(message),
        qos: qos(r.qos),
        retain: r.retain,
        subscription_ids: r
            .subscription_ids
            .into_iter()
            .filter_map(NonZeroU32::new)
            .collect(),
        storage_seq: std::num::NonZeroU64::new(seq),
    })
}

fn will_record(w: &LastWill, publish_at_ms: u64) -> WillRecord {
    let p = &w.properties;
    let props = PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..PublishProperties::default()
    };
    WillRecord {
        message: MessageRecord {
            topic: w.topic.to_string(),
            payload: w.payload.to_vec(),
            qos: w.qos.as_u8(),
            retain: w.retain,
            properties: properties_record(&props),
            publisher: None,
            expires_at_ms: None,
        },
        publish_at_ms,
        message_expiry_interval: p.message_expiry_interval,
    }
}

/// A will from its record, with the time to publish it.
pub(crate) fn will_from_record(r: WillRecord) -> Option<(LastWill, u64)> {
    let topic = TopicName::new(r.message.topic).ok()?;
    let p = publish_properties(r.message.properties);
    let will = LastWill {
        topic,
        payload: Bytes::from(r.message.payload),
        qos: qos(r.message.qos),
        retain: r.message.retain,
        properties: WillProperties {
            will_delay_interval: None,
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: r.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
        },
    };
    Some((will, r.publish_at_ms))
}

/// The record of a session's durable state.
pub(crate) fn session_record(st: &SessionState) -> SessionRecord {
    SessionRecord {
        expiry_interval: st.expiry_interval,
        subscriptions: st
            .subscriptions
            .iter()
            .map(|(f, r)| SubscriptionRecord {
                filter: f.to_string(),
                qos: r.options.qos.as_u8(),
                no_local: r.options.no_local,
                retain_as_published: r.options.retain_as_published,
                retain_handling: r.options.retain_handling as u8,
                id: r.id.map(NonZeroU32::get),
            })
            .collect(),
        disconnected_at_ms: st.disconnected_at_ms.map(std::num::NonZeroU64::get),
        will: st
            .pending_will
            .as_ref()
            .map(|w| will_record(&w.will, w.at_ms)),
        owner: st.client.as_deref().map(owner_record),
    }
}

/// The stored form of a session's authorization context.
pub(crate) fn owner_record(c: &ClientInfo) -> OwnerRecord {
    OwnerRecord {
        connect_username: c.claimed_username.as_ref().map(|u| u.to_string()),
        identity_username: c.identity.username.clone(),
        roles: c.identity.roles.clone(),
        protocol: c.protocol.level(),
        peer: c.peer.map(|p| p.to_string()),
        listener: c.listener.to_string(),
    }
}

/// A session's authorization context from its record; `None` if the record is damaged
/// (an unknown protocol level), which leaves the session's context unknown (fail closed).
pub(crate) fn client_from_owner(client_id: &str, r: OwnerRecord) -> Option<ClientInfo> {
    let protocol = match r.protocol {
        3 => crate::codec::ProtocolVersion::V31,
        4 => crate::codec::ProtocolVersion::V311,
        5 => crate::codec::ProtocolVersion::V5,
        _ => return None,
    };
    Some(ClientInfo {
        client_id: client_id.into(),
        claimed_username: r.connect_username.map(Into::into),
        identity: Identity {
            username: r.identity_username,
            roles: r.roles,
        },
        protocol,
        peer: r.peer.and_then(|p| p.parse().ok()),
        listener: r.listener.into(),
        // Only a bridge's own link can hold a bridge's client identifier.
        internal: crate::policy::is_bridge_client_id(client_id),
    })
}

/// A subscription from its record.
pub(crate) fn subscription_from_record(
    r: SubscriptionRecord,
) -> Option<(TopicFilter, CoreSubscription)> {
    let filter = TopicFilter::new(r.filter).ok()?;
    let options = SubscriptionOptions {
        qos: qos(r.qos),
        no_local: r.no_local,
        retain_as_published: r.retain_as_published,
        retain_handling: match r.retain_handling {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendOnSubscribe,
        },
    };
    Some((
        filter,
        CoreSubscription {
            options,
            id: r.id.and_then(NonZeroU32::new),
        },
    ))
}
