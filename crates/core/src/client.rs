//! The in-process client: an application talks to its embedded broker without sockets.
//!
//! It goes through exactly the same connection, session, retained-message and (later)
//! authorization pipeline as a network client; only the transport differs: packets travel
//! as values over bounded channels, so payloads are shared `Bytes`, never copied. The client
//! speaks MQTT 5.0 semantics, so operations report reason codes.
//!
//! A [`Client`] is cheap to clone and can be used from many tasks. Messages for its
//! subscriptions arrive on the [`Deliveries`] stream returned alongside it; QoS 1 and 2
//! deliveries are acknowledged to the broker once they are in that stream's buffer.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::codec::{
    Connect, Disconnect, LastWill, Packet, PacketId, ProtocolVersion, PubResponse, Publish,
    PublishProperties, PublishQoS, QoS, ReasonCode, Subscribe, SubscribeProperties,
    SubscriptionOptions, Unsubscribe, UnsubscribeProperties,
};
use crate::connection;
use crate::error::ClientError;
use crate::handle::BrokerHandle;
use crate::topic::{TopicFilter, TopicName};
use crate::transport::ToClient;

/// How an in-process client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    client_id: ByteString,
    clean_start: bool,
    session_expiry: u32,
    will: Option<LastWill>,
    username: Option<ByteString>,
    password: Option<Bytes>,
    request_timeout: Duration,
    buffer: usize,
}

impl ClientOptions {
    /// A clean-start client named `client_id` (empty: the broker assigns one).
    pub fn new(client_id: impl Into<ByteString>) -> Self {
        Self {
            client_id: client_id.into(),
            clean_start: true,
            session_expiry: 0,
            will: None,
            username: None,
            password: None,
            request_timeout: Duration::from_secs(30),
            buffer: 1024,
        }
    }

    /// Persistent session: resume the broker's session for this client id if there is one,
    /// and keep it after disconnecting (until the broker's limits end it).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.clean_start = !persistent;
        self.session_expiry = if persistent { u32::MAX } else { 0 };
        self
    }

    /// Session Expiry Interval in seconds: how long the broker keeps the session after the
    /// client goes away (0: it ends with the connection; `u32::MAX`: never expires).
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.session_expiry = seconds;
        self
    }

    /// A Will Message, published if the client goes away without [`Client::disconnect`].
    pub fn will(mut self, will: LastWill) -> Self {
        self.will = Some(will);
        self
    }

    /// User name and password, checked by the broker's authenticators like a network
    /// client's.
    pub fn credentials(
        mut self,
        username: impl Into<ByteString>,
        password: impl Into<Bytes>,
    ) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// How long an operation waits for the broker's answer. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Capacity of the channels between client and broker: packets towards the broker,
    /// batches (what the broker had ready at once) from it and into [`Deliveries`].
    /// Default 1,024.
    pub fn buffer(mut self, packets: usize) -> Self {
        self.buffer = packets.max(1);
        self
    }
}

/// How an in-process client publishes one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// v5 properties (Message Expiry, Content Type, Response Topic, Correlation Data, User
    /// Properties, Payload Format). A Topic Alias or Subscription Identifier here is refused
    /// by the broker as a protocol error.
    pub properties: PublishProperties,
}

impl PublishOptions {
    /// Options with `qos` and no properties.
    pub fn new(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }
}

/// A message delivered to an in-process client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Topic Name.
    pub topic: TopicName,
    /// Payload, shared with the publisher's buffer.
    pub payload: Bytes,
    /// Delivery QoS (the lower of published and granted QoS).
    pub qos: QoS,
    /// RETAIN flag: set for retained messages sent on subscribe.
    pub retain: bool,
    /// DUP flag: this is a re-delivery.
    pub dup: bool,
    /// v5 properties (including Subscription Identifiers).
    pub properties: PublishProperties,
}

/// The stream of messages for an in-process client's subscriptions.
#[derive(Debug)]
pub struct Deliveries {
    /// Messages arrive in batches (one channel operation per batch, not per message).
    rx: mpsc::Receiver<Vec<Received>>,
    batch: std::vec::IntoIter<Received>,
}

impl Deliveries {
    /// The next message; `None` once the client is disconnected and the buffer is empty.
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Received> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        loop {
            if let Some(message) = self.batch.next() {
                return Poll::Ready(Some(message));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl futures_core::Stream for Deliveries {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        self.poll_recv(cx)
    }
}

#[derive(Debug, Default)]
struct Pending {
    last_id: u16,
    waiters: HashMap<u16, oneshot::Sender<Packet>>,
    /// Outbound QoS 2 ids between PUBREC and PUBCOMP: still in use.
    releasing: HashSet<u16>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Packet>,
    pending: Mutex<Pending>,
    closed: CancellationToken,
    /// Cancelled when the last [`Client`] handle is dropped: the connection then ends as
    /// if the network had gone (the will is published).
    dropped: CancellationToken,
    timeout: Duration,
    client_id: ByteString,
    /// CONNACK's Session Present.
    session_present: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dropped.cancel();
    }
}

/// An in-process MQTT client of an embedded broker.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl BrokerHandle {
    /// Connects an in-process client.
    ///
    /// Cancel safety: if dropped before it completes, the half-made connection is closed.
    pub async fn client(
        &self,
        options: ClientOptions,
    ) -> Result<(Client, Deliveries), ClientError> {
        if self.is_shutting_down() {
            return Err(ClientError::Disconnected);
        }
        let mut connect = Connect::new(ProtocolVersion::V5, options.client_id.clone());
        connect.clean_start = options.clean_start;
        connect.keep_alive = 0;
        connect.will = options.will.clone();
        connect.username = options.username.clone();
        connect.password = options.password.clone();
        if options.session_expiry > 0 {
            connect.properties.session_expiry_interval = Some(options.session_expiry);
        }
        let link = connection::open_local(
            &self.ctx,
            connect,
            false,
            options.buffer,
            options.request_timeout,
        )
        .await?;
        let connection::LocalLink {
            tx: to_broker,
            rx: from_broker,
            first,
            connack,
        } = link;
        let client_id = connack
            .properties
            .assigned_client_identifier
            .unwrap_or(options.client_id);
        let session_present = connack.session_present;
        let (deliver_tx, deliver_rx) = mpsc::channel(options.buffer);
        let dropped = CancellationToken::new();
        let closed = CancellationToken::new();
        let inner = Arc::new(Inner {
            tx: to_broker.clone(),
            pending: Mutex::new(Pending::default()),
            closed: closed.clone(),
            dropped: dropped.clone(),
            timeout: options.request_timeout,
            client_id,
            session_present,
        });
        let driver = Driver {
            inner: Arc::downgrade(&inner),
            tx: to_broker,
            closed,
            dropped,
        };
        self.ctx
            .lifecycle
            .tracker
            .spawn(driver.run(first, from_broker, deliver_tx));
        Ok((
            Client { inner },
            Deliveries {
                rx: deliver_rx,
                batch: Vec::new().into_iter(),
            },
        ))
    }
}

/// The client's background task: handles what the broker sends, completes requests,
/// acknowledges and forwards messages. It holds the client only weakly, so dropping the last
/// [`Client`] ends the connection.
struct Driver {
    inner: Weak<Inner>,
    tx: mpsc::Sender<Packet>,
    closed: CancellationToken,
    dropped: CancellationToken,
}

impl Driver {
    /// Completes the request waiting on `id` with `packet`.
    fn complete(&self, id: PacketId, packet: Packet) {
        if let Some(inner) = self.inner.upgrade() {
            if let Some(waiter) = inner.pending.lock().waiters.remove(&id.get()) {
                let _ = waiter.send(packet);
            }
        }
    }

    /// Applies one packet from the broker: completes requests, queues messages into
    /// `received_out`, and returns the reply it needs. `Err` when the broker disconnected.
    fn on_packet(
        &self,
        item: ToClient,
        awaiting_rel: &mut HashSet<u16>,
        received_out: &mut Vec<Received>,
    ) -> Result<Option<Packet>, ()> {
        let packet = match item {
            ToClient::Message(m) => {
                let (id, qos) = (m.qos.packet_id(), m.qos.qos());
                let fresh = match (qos, id) {
                    (QoS::ExactlyOnce, Some(id)) => awaiting_rel.insert(id.get()),
                    _ => true,
                };
                if fresh {
                    let (topic, payload, properties) =
                        crate::message::Message::into_copy(m.message, m.subscription_ids);
                    received_out.push(Received {
                        topic,
                        payload,
                        qos,
                        retain: m.retain,
                        dup: m.dup,
                        properties,
                    });
                }
                return Ok(match (qos, id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubResponse::new(id))),
                    (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(PubResponse::new(id))),
                    _ => None,
                });
            }
            ToClient::Packet(packet) => *packet,
        };
        let reply = match packet {
            Packet::PubRel(r) => {
                awaiting_rel.remove(&r.packet_id.get());
                Some(Packet::PubComp(PubResponse::new(r.packet_id)))
            }
            Packet::PubRec(r) => {
                let id = r.packet_id;
                let ok = r.reason_code.is_success();
                if ok {
                    if let Some(inner) = self.inner.upgrade() {
                        inner.pending.lock().releasing.insert(id.get());
                    }
                }
                self.complete(id, Packet::PubRec(r));
                ok.then(|| Packet::PubRel(PubResponse::new(id)))
            }
            Packet::PubComp(r) => {
                if let Some(inner) = self.inner.upgrade() {
                    inner.pending.lock().releasing.remove(&r.packet_id.get());
                }
                None
            }
            Packet::PubAck(ref a) => {
                self.complete(a.packet_id, packet.clone());
                None
            }
            Packet::SubAck(ref a) => {
                self.complete(a.packet_id, packet.clone());
                None
            }
            Packet::UnsubAck(ref a) => {
                self.complete(a.packet_id, packet.clone());
                None
            }
            Packet::Disconnect(d) => {
                tracing::debug!(reason = %d.reason_code, "broker disconnected in-process client");
                return Err(());
            }
            _ => None,
        };
        Ok(reply)
    }

    async fn run(
        self,
        first: Vec<ToClient>,
        mut from_broker: mpsc::Receiver<Vec<ToClient>>,
        deliver: mpsc::Sender<Vec<Received>>,
    ) {
        let mut awaiting_rel: HashSet<u16> = HashSet::new();
        let mut batch = first;
        // One wait for the token for the client's life, not one (and a lock) per batch.
        let dropped = self.dropped.clone();
        let dropped = dropped.cancelled();
        tokio::pin!(dropped);
        'batches: loop {
            let mut received = Vec::new();
            let mut replies = Vec::new();
            let mut stop = false;
            for packet in batch.drain(..) {
                match self.on_packet(packet, &mut awaiting_rel, &mut received) {
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) => {}
                    Err(()) => {
                        stop = true;
                        break;
                    }
                }
            }
            // Delivered first, acknowledged after: as a network client acknowledges what it
            // has taken in. If nobody reads deliveries any more, keep acknowledging anyway.
            if !received.is_empty() {
                let _ = deliver.send(received).await;
            }
            for reply in replies {
                if self.tx.send(reply).await.is_err() {
                    break 'batches;
                }
            }
            if stop {
                break;
            }
            batch = tokio::select! {
                _ = &mut dropped => break,
                b = from_broker.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
            };
        }
        self.closed.cancel();
        if let Some(inner) = self.inner.upgrade() {
            inner.pending.lock().waiters.clear();
        }
    }
}

impl Client {
    /// The client identifier (the assigned one if the options left it empty).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// True if the broker resumed a session it held for this client id (CONNACK's Session
    /// Present): its subscriptions are still in place and queued messages follow. False for
    /// a new session, and always with `clean_start`.
    pub fn session_present(&self) -> bool {
        self.inner.session_present
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    fn allocate(&self) -> Result<(PacketId, oneshot::Receiver<Packet>), ClientError> {
        let mut pending = self.inner.pending.lock();
        for _ in 0..u16::MAX {
            pending.last_id = pending.last_id.wrapping_add(1);
            let Some(id) = PacketId::new(pending.last_id) else {
                continue;
            };
            if pending.waiters.contains_key(&id.get()) || pending.releasing.contains(&id.get()) {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            pending.waiters.insert(id.get(), tx);
            return Ok((id, rx));
        }
        Err(ClientError::TooManyInflight)
    }

    /// Sends a packet to the broker. Tried at once, when called (callers await at once):
    /// with room in the channel, the common case, no future holds the packet and no lock
    /// is taken. The channel closes when the connection ends.
    fn send(
        &self,
        packet: Packet,
    ) -> impl std::future::Future<Output = Result<(), ClientError>> + '_ {
        let full = match self.inner.tx.try_send(packet) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ClientError::Disconnected),
            // Boxed: only this rare path makes the future hold the packet.
            Err(mpsc::error::TrySendError::Full(packet)) => Ok(Some(Box::new(packet))),
        };
        async move {
            let Some(packet) = full? else {
                return Ok(());
            };
            if self.is_closed() {
                return Err(ClientError::Disconnected);
            }
            self.inner
                .tx
                .send(*packet)
                .await
                .map_err(|_| ClientError::Disconnected)
        }
    }

    async fn request(
        &self,
        id: PacketId,
        rx: oneshot::Receiver<Packet>,
        packet: Packet,
    ) -> Result<Packet, ClientError> {
        let result = async {
            self.send(packet).await?;
            match tokio::time::timeout(self.inner.timeout, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(ClientError::Disconnected),
                Err(_) => Err(ClientError::Timeout),
            }
        }
        .await;
        if result.is_err() {
            self.inner.pending.lock().waiters.remove(&id.get());
        }
        result
    }

    /// Publishes a message. Resolves when the broker has taken responsibility for it: at
    /// once for QoS 0 (once queued to the broker), on PUBACK for QoS 1, on PUBREC for QoS 2.
    ///
    /// Cancel safety: a QoS 1/2 publish dropped after its packet left may still be
    /// delivered.
    pub async fn publish(
        &self,
        topic: impl TryInto<TopicName, Error = impl Into<ClientError>>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        let publish = Self::prepare(topic, payload, retain)?;
        if qos == QoS::AtMostOnce {
            // Handed to the channel before the first await: the future holds no packet.
            return self.send(Packet::Publish(publish)).await;
        }
        Box::pin(self.publish_acked(publish, qos)).await.map(|_| ())
    }

    /// Publishes with v5 properties; returns the broker's reason code (Success, or No
    /// matching subscribers for QoS 1/2; always Success for QoS 0). A failure code is an
    /// error.
    pub async fn publish_with(
        &self,
        topic: impl TryInto<TopicName, Error = impl Into<ClientError>>,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<ReasonCode, ClientError> {
        let mut publish = Self::prepare(topic, payload, options.retain)?;
        publish.properties = options.properties;
        if options.qos == QoS::AtMostOnce {
            self.send(Packet::Publish(publish)).await?;
            return Ok(ReasonCode::Success);
        }
        Box::pin(self.publish_acked(publish, options.qos)).await
    }

    /// A PUBLISH for `topic` (QoS 0 form; the packet id is set when it is sent).
    fn prepare(
        topic: impl TryInto<TopicName, Error = impl Into<ClientError>>,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<Publish, ClientError> {
        let topic = topic.try_into().map_err(Into::into)?;
        let mut p = Publish::new(topic, PublishQoS::AtMostOnce, payload.into());
        p.retain = retain;
        Ok(p)
    }

    /// Sends a QoS 1/2 PUBLISH and waits for its acknowledgement (boxed by the callers, so
    /// their futures stay small for QoS 0).
    async fn publish_acked(&self, mut p: Publish, qos: QoS) -> Result<ReasonCode, ClientError> {
        let (id, rx) = self.allocate()?;
        p.qos = PublishQoS::new(qos, id);
        match self.request(id, rx, Packet::Publish(p)).await? {
            Packet::PubAck(a) | Packet::PubRec(a) if a.reason_code.is_success() => {
                Ok(a.reason_code)
            }
            Packet::PubAck(a) | Packet::PubRec(a) => Err(ClientError::Failed(a.reason_code)),
            _ => Err(ClientError::Disconnected),
        }
    }

    /// Subscribes to one filter with maximum QoS `qos`; returns the granted QoS.
    pub async fn subscribe(
        &self,
        filter: impl TryInto<TopicFilter, Error = impl Into<ClientError>>,
        qos: QoS,
    ) -> Result<QoS, ClientError> {
        let filter = filter.try_into().map_err(Into::into)?;
        let codes = self
            .subscribe_with(
                vec![(filter, SubscriptionOptions::new(qos))],
                SubscribeProperties::default(),
            )
            .await?;
        match codes.first() {
            Some(ReasonCode::Success) => Ok(QoS::AtMostOnce),
            Some(ReasonCode::GrantedQoS1) => Ok(QoS::AtLeastOnce),
            Some(ReasonCode::GrantedQoS2) => Ok(QoS::ExactlyOnce),
            Some(&code) => Err(ClientError::Failed(code)),
            None => Err(ClientError::Failed(ReasonCode::UnspecifiedError)),
        }
    }

    /// Subscribes to several filters with full options; returns one reason code per filter.
    pub async fn subscribe_with(
        &self,
        filters: Vec<(TopicFilter, SubscriptionOptions)>,
        properties: SubscribeProperties,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        let (packet_id, rx) = self.allocate()?;
        let packet = Packet::Subscribe(Subscribe {
            packet_id,
            properties,
            filters,
        });
        match self.request(packet_id, rx, packet).await? {
            Packet::SubAck(ack) => Ok(ack.reason_codes),
            _ => Err(ClientError::Disconnected),
        }
    }

    /// Unsubscribes from `filter`; returns the broker's reason code (Success or No
    /// subscription existed).
    pub async fn unsubscribe(
        &self,
        filter: impl TryInto<TopicFilter, Error = impl Into<ClientError>>,
    ) -> Result<ReasonCode, ClientError> {
        let filter = filter.try_into().map_err(Into::into)?;
        let (packet_id, rx) = self.allocate()?;
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id,
            properties: UnsubscribeProperties::default(),
            filters: vec![filter],
        });
        match self.request(packet_id, rx, packet).await? {
            Packet::UnsubAck(ack) => Ok(ack.reason_codes.first().copied().unwrap_or_default()),
            _ => Err(ClientError::Disconnected),
        }
    }

    /// Disconnects normally: the will is discarded and a non-persistent session ends.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.send(Packet::Disconnect(Disconnect::default())).await?;
        self.inner.closed.cancelled().await;
        Ok(())
    }
}
