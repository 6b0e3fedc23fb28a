//! The bridge's task: connect both sides, relay packet for packet, reconnect after a
//! back-off. See the module docs of `bridge` for the guarantees.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::remote::{self, Remote};
use super::{BridgeConfig, BridgeError, BridgeState};
use crate::codec::{
    Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubResponse, Publish, PublishQoS, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, Unsubscribe,
};
use crate::connection::{open_local, LocalLink};
use crate::context::Context;
use crate::error::ClientError;
use crate::topic::{TopicFilter, TopicName};
use crate::transport::{LocalMessage, PacketReader, PacketWriter, ToClient};

/// Runs one bridge until the broker shuts down.
pub(crate) async fn run(ctx: Arc<Context>, config: Arc<BridgeConfig>, state: Arc<BridgeState>) {
    let stop = ctx.lifecycle.shutdown.clone();
    let mut failures = 0u32;
    let span = tracing::info_span!("bridge", name = %config.name, remote = %config.address);
    let _ = &span;
    loop {
        let started = Instant::now();
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = connect_both(&ctx, &config) => c,
        };
        match connected {
            Ok((remote, link)) => {
                BridgeState::count(&state.connects);
                tracing::info!(bridge = %config.name, remote = %config.address, "bridge connected");
                let relay = Relay::new(&ctx, &config, &state, remote, link);
                let ended = relay.run(&stop).await;
                state.connected.store(false, Ordering::Relaxed);
                state.inflight.store(0, Ordering::Relaxed);
                match ended {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(bridge = %config.name, error = %e, "bridge connection ended");
                        *state.last_error.lock() = Some(e);
                    }
                }
                if started.elapsed() > config.backoff.1 {
                    failures = 0;
                }
            }
            Err(e) => {
                BridgeState::count(&state.connect_failures);
                tracing::warn!(bridge = %config.name, remote = %config.address, error = %e, "bridge cannot connect");
                *state.last_error.lock() = Some(e);
            }
        }
        failures = failures.saturating_add(1);
        let wait = backoff(config.backoff, failures);
        tracing::debug!(bridge = %config.name, ?wait, "bridge reconnects after a back-off");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The wait before attempt `n + 1` after `n` failures: `base · 2^(n-1)` capped at `cap`,
/// drawn between half and all of that.
fn backoff((base, cap): (Duration, Duration), failures: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    let half = exp / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    let jitter = RandomState::new().hash_one(std::time::SystemTime::now()) % nanos;
    half + Duration::from_nanos(jitter)
}

/// Connects to the remote, then the local session (which takes as many unacknowledged
/// messages at once as the remote does).
async fn connect_both(
    ctx: &Arc<Context>,
    config: &BridgeConfig,
) -> Result<(Remote, LocalLink), BridgeError> {
    let settings = ctx.connection_settings();
    let local_receive = settings.capabilities.receive_maximum;
    let max_packet = settings.limits.max_packet_size;
    let remote = remote::connect(config, local_receive, max_packet).await?;
    let window = remote
        .receive_maximum
        .unwrap_or(settings.limits.max_inflight);
    let connect = local_connect(config, window);
    let link = open_local(ctx, connect, true, 1024, Duration::from_secs(30))
        .await
        .map_err(local_error)?;
    Ok((remote, link))
}

/// An outbound QoS 1/2 message sent to the remote under the local packet identifier.
#[derive(Debug, Clone, Copy)]
struct Out {
    /// QoS 2 locally: the local broker expects PUBREC, then PUBREL and PUBCOMP.
    local_qos2: bool,
    /// The remote is done with it (acknowledged, refused, or never sent): a local PUBREL is
    /// answered here.
    remote_done: bool,
}

/// How long and how many of the bridge's own outbound messages are remembered, against a
/// 3.1.1 remote that echoes them.
const ECHO_WINDOW: Duration = Duration::from_secs(60);
const ECHO_ENTRIES: usize = 4096;

/// Subscription packet identifiers (the first packets on each connection).
const SUBSCRIBE_ID: u16 = 1;

struct Relay<'a> {
    ctx: &'a Arc<Context>,
    config: &'a BridgeConfig,
    state: &'a BridgeState,
    remote: Remote,
    tx: mpsc::Sender<Packet>,
    rx: mpsc::Receiver<Vec<ToClient>>,
    first: Vec<ToClient>,
    out: HashMap<u16, Out>,
    /// Entries of `out` the remote has not finished: the bridge's in-flight count.
    inflight: usize,
    /// Inbound QoS 2 messages answered here (no rule takes them): PUBREL gets PUBCOMP here.
    skipped: HashSet<u16>,
    /// Recent outbound (topic, payload hash), when the remote may echo.
    recent: VecDeque<(TopicName, u64, Instant)>,
    hasher: RandomState,
    to_local: Vec<Packet>,
    /// SUBACKs still awaited; the bridge reports itself connected once both sides
    /// subscribed.
    subacks: u8,
}

impl<'a> Relay<'a> {
    fn new(
        ctx: &'a Arc<Context>,
        config: &'a BridgeConfig,
        state: &'a BridgeState,
        remote: Remote,
        link: LocalLink,
    ) -> Self {
        Relay {
            ctx,
            config,
            state,
            remote,
            tx: link.tx,
            rx: link.rx,
            first: link.first,
            out: HashMap::new(),
            inflight: 0,
            skipped: HashSet::new(),
            recent: VecDeque::new(),
            hasher: RandomState::new(),
            to_local: Vec::new(),
            subacks: 0,
        }
    }

    /// Relays until either side goes (`Err`) or the broker shuts down (`Ok`).
    async fn run(mut self, stop: &CancellationToken) -> Result<(), BridgeError> {
        let result = self.relay(stop).await;
        // Both sides end together: the remote gets a DISCONNECT, the local session stays.
        let bye = Packet::Disconnect(Disconnect::new(ReasonCode::Success));
        let _ = self.remote.writer.packet(&bye, self.remote.version);
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.remote.writer.flush(&self.remote.metrics),
        )
        .await;
        self.remote.writer.shutdown().await;
        let _ = self.tx.try_send(bye);
        match result {
            Err(_) if stop.is_cancelled() => Ok(()),
            other => other,
        }
    }

    async fn relay(&mut self, stop: &CancellationToken) -> Result<(), BridgeError> {
        self.subscribe_local();
        self.subscribe_remote();
        self.subscribed();
        let first = std::mem::take(&mut self.first);
        self.on_local(first)?;
        self.send().await?;
        let keep_alive = self.remote.keep_alive;
        let mut ping = tokio::time::interval(if keep_alive.is_zero() {
            Duration::from_secs(3600)
        } else {
            keep_alive
        });
        ping.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                batch = self.rx.recv() => match batch {
                    Some(batch) => self.on_local(batch)?,
                    None => return Err(BridgeError::Local(ReasonCode::UnspecifiedError)),
                },
                read = self.remote.reader.read(&self.remote.limits, &self.remote.metrics) => match read {
                    Ok(Some(packet)) => self.on_remote(packet)?,
                    Ok(None) => return Err(BridgeError::Lost(Arc::new(remote::closed()))),
                    Err(e) => return Err(remote::read_error(e)),
                },
                _ = ping.tick(), if !keep_alive.is_zero() => self.keep_alive(keep_alive)?,
            }
            self.send().await?;
        }
    }

    /// Writes what is buffered for the remote and hands the local broker its packets.
    async fn send(&mut self) -> Result<(), BridgeError> {
        self.remote
            .writer
            .flush(&self.remote.metrics)
            .await
            .map_err(|e| BridgeError::Lost(Arc::new(e)))?;
        for packet in self.to_local.drain(..) {
            self.tx
                .send(packet)
                .await
                .map_err(|_| BridgeError::Local(ReasonCode::UnspecifiedError))?;
        }
        Ok(())
    }

    fn keep_alive(&mut self, keep_alive: Duration) -> Result<(), BridgeError> {
        if let Some(last) = self.remote.reader.last_packet() {
            if last.elapsed() > keep_alive + keep_alive / 2 {
                return Err(BridgeError::KeepAlive);
            }
        }
        self.send_remote(&Packet::PingReq);
        Ok(())
    }

    fn send_remote(&mut self, packet: &Packet) {
        if let Err(e) = self.remote.writer.packet(packet, self.remote.version) {
            tracing::debug!(bridge = %self.config.name, error = %e, "packet not encodable for the remote");
        }
    }

    /// Subscribes the local session to the `out` rules (again: a no-op for a session that
    /// kept them).
    fn subscribe_local(&mut self) {
        let packets = local_subscriptions(self.ctx, self.config);
        self.subacks += packets
            .iter()
            .filter(|p| matches!(p, Packet::Subscribe(_)))
            .count() as u8;
        self.to_local.extend(packets);
    }

    /// Subscribes on the remote to the `in` rules.
    fn subscribe_remote(&mut self) {
        let wanted = filters(
            self.config
                .topics
                .iter()
                .filter_map(|r| r.remote_subscription().map(|f| (f.clone(), r.qos()))),
        );
        if wanted.is_empty() {
            return;
        }
        let filters = wanted
            .into_iter()
            .map(|(f, qos)| (f, bridge_options(qos)))
            .collect();
        self.subacks += 1;
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: packet_id(SUBSCRIBE_ID),
            properties: Default::default(),
            filters,
        });
        self.send_remote(&subscribe);
    }

    /// What the local broker sent: messages to forward, and its side of QoS exchanges.
    fn on_local(&mut self, batch: Vec<ToClient>) -> Result<(), BridgeError> {
        for item in batch {
            let packet = match item {
                ToClient::Message(m) => {
                    self.forward_out(m);
                    continue;
                }
                ToClient::Packet(packet) => *packet,
            };
            match packet {
                // Outbound QoS 2, second half.
                Packet::PubRel(r) => {
                    let id = r.packet_id;
                    if self.out.get(&id.get()).is_some_and(|o| o.remote_done) {
                        self.set_out(id, None);
                        self.to_local.push(Packet::PubComp(PubResponse::new(id)));
                    } else {
                        self.send_remote(&Packet::PubRel(PubResponse::new(id)));
                    }
                }
                // Inbound, acknowledged locally: now the remote hears it.
                Packet::PubAck(a) => {
                    self.count_in(a.reason_code);
                    self.send_remote(&Packet::PubAck(self.answer(a)));
                }
                Packet::PubRec(r) => {
                    self.count_in(r.reason_code);
                    self.send_remote(&Packet::PubRec(self.answer(r)));
                }
                Packet::PubComp(c) => {
                    self.send_remote(&Packet::PubComp(PubResponse::new(c.packet_id)))
                }
                Packet::SubAck(ack) => self.check_suback("local", &ack),
                Packet::Disconnect(d) => return Err(BridgeError::Local(d.reason_code)),
                _ => {}
            }
        }
        Ok(())
    }

    /// A local acknowledgement as the remote gets it (reason codes exist in v5 only).
    fn answer(&self, ack: PubResponse) -> PubResponse {
        if self.remote.version.is_v5() && !ack.reason_code.is_success() {
            PubResponse::with_reason(ack.packet_id, ack.reason_code)
        } else {
            PubResponse::new(ack.packet_id)
        }
    }

    fn count_in(&self, code: ReasonCode) {
        if code.is_success() {
            BridgeState::count(&self.state.messages_in);
        } else {
            BridgeState::count(&self.state.dropped);
        }
    }

    fn check_suback(&mut self, side: &'static str, ack: &SubAck) {
        if let Some(code) = ack.reason_codes.iter().find(|c| !c.is_success()) {
            tracing::warn!(bridge = %self.config.name, side, code = %code, "bridge subscription refused");
            *self.state.last_error.lock() = Some(BridgeError::SubscriptionRefused(*code));
        }
        self.subacks = self.subacks.saturating_sub(1);
        self.subscribed();
    }

    /// Reports the bridge connected once its subscriptions on both sides are answered.
    fn subscribed(&self) {
        if self.subacks == 0 {
            self.state.connected.store(true, Ordering::Relaxed);
        }
    }

    /// A local message for the remote: renamed by the first `out` rule that places it, at
    /// the QoS the remote takes, under the local packet identifier.
    fn forward_out(&mut self, m: LocalMessage) {
        let LocalMessage {
            message,
            qos,
            retain,
            dup,
            ..
        } = m;
        let local_id = qos.packet_id();
        let local_qos2 = qos.qos() == QoS::ExactlyOnce;
        let topic = self
            .config
            .topics
            .iter()
            .find_map(|r| r.outbound(message.topic.as_str()));
        let Some(topic) = topic else {
            return self.drop_out(local_id, local_qos2);
        };
        let sent = match (qos.qos().min(self.remote.max_qos), local_id) {
            (QoS::AtLeastOnce, Some(id)) => PublishQoS::AtLeastOnce(id),
            (QoS::ExactlyOnce, Some(id)) => PublishQoS::ExactlyOnce(id),
            _ => PublishQoS::AtMostOnce,
        };
        let retain = retain && self.remote.retain_available;
        let mut publish = message.to_publish(sent, retain, dup, &[]);
        publish.topic = topic;
        let packet = Packet::Publish(publish);
        if !self.fits(&packet) {
            return self.drop_out(local_id, local_qos2);
        }
        if let (false, Packet::Publish(p)) = (self.remote.no_echo, &packet) {
            self.remember(&p.topic, &p.payload);
        }
        self.send_remote(&packet);
        match (sent.packet_id(), local_id) {
            (Some(id), _) => {
                let out = Out {
                    local_qos2,
                    remote_done: false,
                };
                self.set_out(id, Some(out));
            }
            (None, Some(id)) => {
                // Sent at QoS 0 (the remote's maximum): done as far as the remote goes.
                BridgeState::count(&self.state.messages_out);
                self.ack_local(id, local_qos2);
            }
            (None, None) => BridgeState::count(&self.state.messages_out),
        }
    }

    /// Whether the remote takes a packet this large (its size counted, not encoded).
    fn fits(&self, packet: &Packet) -> bool {
        match self.remote.max_packet {
            None => true,
            Some(max) => packet
                .encoded_len(self.remote.version)
                .is_ok_and(|n| n <= max as usize),
        }
    }

    /// A local message that does not go out: counted, and acknowledged so the local
    /// session moves on.
    fn drop_out(&mut self, id: Option<PacketId>, local_qos2: bool) {
        BridgeState::count(&self.state.dropped);
        if let Some(id) = id {
            self.ack_local(id, local_qos2);
        }
    }

    /// Acknowledges an outbound message to the local broker on the remote's behalf.
    fn ack_local(&mut self, id: PacketId, local_qos2: bool) {
        if local_qos2 {
            let out = Out {
                local_qos2,
                remote_done: true,
            };
            self.set_out(id, Some(out));
            self.to_local.push(Packet::PubRec(PubResponse::new(id)));
        } else {
            self.to_local.push(Packet::PubAck(PubResponse::new(id)));
        }
    }

    /// Sets (or, with `None`, removes) the state of outbound `id`, keeping the in-flight
    /// count (what the remote has not finished) as it goes.
    fn set_out(&mut self, id: PacketId, new: Option<Out>) {
        let unfinished = |o: &Option<Out>| o.is_some_and(|o| !o.remote_done);
        let old = match new {
            Some(out) => self.out.insert(id.get(), out),
            None => self.out.remove(&id.get()),
        };
        self.inflight =
            self.inflight + usize::from(unfinished(&new)) - usize::from(unfinished(&old));
        self.state.inflight.store(self.inflight, Ordering::Relaxed);
    }

    /// What the remote broker sent.
    fn on_remote(&mut self, packet: Packet) -> Result<(), BridgeError> {
        match packet {
            Packet::Publish(p) => self.forward_in(p),
            Packet::PubAck(a) => {
                let id = a.packet_id;
                self.count_out(a.reason_code);
                match self.out.get(&id.get()).copied() {
                    Some(o) if o.local_qos2 => {
                        let done = Out {
                            remote_done: true,
                            ..o
                        };
                        self.set_out(id, Some(done));
                        self.to_local.push(Packet::PubRec(PubResponse::new(id)));
                    }
                    _ => {
                        self.set_out(id, None);
                        self.to_local.push(Packet::PubAck(PubResponse::new(id)));
                    }
                }
            }
            Packet::PubRec(r) => {
                let id = r.packet_id;
                self.count_out(r.reason_code);
                if let Some(o) = self.out.get(&id.get()).copied() {
                    // A refused QoS 2 message ends at the remote (v5 §4.3.3): none to release.
                    let remote_done = !r.reason_code.is_success();
                    self.set_out(id, Some(Out { remote_done, ..o }));
                }
                self.to_local.push(Packet::PubRec(PubResponse::new(id)));
            }
            Packet::PubComp(c) => {
                self.set_out(c.packet_id, None);
                self.to_local
                    .push(Packet::PubComp(PubResponse::new(c.packet_id)));
            }
            Packet::PubRel(r) => {
                let id = r.packet_id;
                if self.skipped.remove(&id.get()) {
                    self.send_remote(&Packet::PubComp(PubResponse::new(id)));
                } else {
                    self.to_local.push(Packet::PubRel(PubResponse::new(id)));
                }
            }
            Packet::SubAck(ack) => self.check_suback("remote", &ack),
            Packet::PingResp | Packet::UnsubAck(_) => {}
            Packet::Disconnect(d) => return Err(BridgeError::Disconnected(d.reason_code)),
            _ => return Err(BridgeError::Protocol("a packet a server does not send")),
        }
        Ok(())
    }

    fn count_out(&self, code: ReasonCode) {
        if code.is_success() {
            BridgeState::count(&self.state.messages_out);
        } else {
            BridgeState::count(&self.state.dropped);
        }
    }

    /// A remote message for the local broker: renamed by the first `in` rule that places
    /// it, under the remote's packet identifier (acknowledged to the remote when the local
    /// broker acknowledges it).
    fn forward_in(&mut self, publish: Publish) {
        let topic = self
            .config
            .topics
            .iter()
            .find_map(|r| r.inbound(publish.topic.as_str()));
        let echo = !self.remote.no_echo && self.is_echo(&publish.topic, &publish.payload);
        let topic = match topic {
            Some(topic) if !echo => topic,
            _ => {
                BridgeState::count(&self.state.dropped);
                match publish.qos {
                    PublishQoS::AtLeastOnce(id) => {
                        self.send_remote(&Packet::PubAck(PubResponse::new(id)));
                    }
                    PublishQoS::ExactlyOnce(id) => {
                        self.skipped.insert(id.get());
                        self.send_remote(&Packet::PubRec(PubResponse::new(id)));
                    }
                    PublishQoS::AtMostOnce => {}
                }
                return;
            }
        };
        if publish.qos == PublishQoS::AtMostOnce {
            BridgeState::count(&self.state.messages_in);
        }
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        self.to_local.push(Packet::Publish(Publish {
            dup: publish.dup,
            qos: publish.qos,
            retain: publish.retain,
            topic,
            properties,
            payload: publish.payload,
        }));
    }

    fn digest(&self, payload: &Bytes) -> u64 {
        self.hasher.hash_one(payload.as_ref())
    }

    /// Notes an outbound message, to recognise it if the remote sends it back.
    fn remember(&mut self, topic: &TopicName, payload: &Bytes) {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(_, _, at)| now.duration_since(*at) > ECHO_WINDOW)
            || self.recent.len() >= ECHO_ENTRIES
        {
            self.recent.pop_front();
        }
        let digest = self.digest(payload);
        self.recent.push_back((topic.clone(), digest, now));
    }

    /// True (once) if `topic` and `payload` are a message this bridge just sent out.
    fn is_echo(&mut self, topic: &TopicName, payload: &Bytes) -> bool {
        let digest = self.digest(payload);
        match self
            .recent
            .iter()
            .position(|(t, d, _)| *d == digest && t == topic)
        {
            Some(i) => {
                self.recent.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The CONNECT of the bridge's local link, taking `window` unacknowledged messages at once.
fn local_connect(config: &BridgeConfig, window: u16) -> Connect {
    let mut connect = Connect::new(
        ProtocolVersion::V5,
        ByteString::from(config.local_client_id()),
    );
    connect.clean_start = false;
    connect.keep_alive = 0;
    connect.bridge = true;
    connect.properties.session_expiry_interval = Some(u32::MAX);
    connect.properties.receive_maximum = std::num::NonZeroU16::new(window.max(1));
    connect
}

/// What subscribes the local session to the `out` rules, and unsubscribes what a stored
/// session keeps from rules no longer configured.
fn local_subscriptions(ctx: &Context, config: &BridgeConfig) -> Vec<Packet> {
    let wanted = filters(
        config
            .topics
            .iter()
            .filter_map(|r| r.local_subscription().map(|f| (f.clone(), r.qos()))),
    );
    let mut packets = Vec::new();
    let stale: Vec<TopicFilter> = ctx
        .sessions
        .get(&config.local_client_id())
        .map(|s| {
            let st = s.state.lock();
            st.subscriptions
                .keys()
                .filter(|f| !wanted.iter().any(|(w, _)| w == *f))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !stale.is_empty() {
        tracing::info!(bridge = %config.name, ?stale, "unsubscribing rules no longer configured");
        packets.push(Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id(2),
            properties: Default::default(),
            filters: stale,
        }));
    }
    if !wanted.is_empty() {
        let filters = wanted
            .into_iter()
            .map(|(f, qos)| (f, bridge_options(qos)))
            .collect();
        packets.push(Packet::Subscribe(Subscribe {
            packet_id: packet_id(SUBSCRIBE_ID),
            properties: Default::default(),
            filters,
        }));
    }
    packets
}

/// Makes the bridge's local session and its subscriptions before the remote is reached
/// (and before the broker's listeners accept), so that what is published while the remote
/// is away waits in that session. A failure is logged and kept as the bridge's last error;
/// the bridge's task still runs (its connections make the session too).
pub(crate) async fn prepare(ctx: &Arc<Context>, config: &BridgeConfig, state: &BridgeState) {
    if let Err(e) = prepare_local(ctx, config).await {
        tracing::error!(bridge = %config.name, error = %e, "bridge's local session not prepared");
        *state.last_error.lock() = Some(e);
    }
}

async fn prepare_local(ctx: &Arc<Context>, config: &BridgeConfig) -> Result<(), BridgeError> {
    let link = open_local(
        ctx,
        local_connect(config, 1),
        true,
        16,
        Duration::from_secs(30),
    )
    .await
    .map_err(local_error)?;
    let lost = || BridgeError::Local(ReasonCode::UnspecifiedError);
    let packets = local_subscriptions(ctx, config);
    let mut awaited = packets.len();
    for packet in packets {
        link.tx.send(packet).await.map_err(|_| lost())?;
    }
    let mut rx = link.rx;
    let mut batch = link.first;
    while awaited > 0 {
        for item in batch.drain(..) {
            if let ToClient::Packet(p) = item {
                match *p {
                    Packet::SubAck(_) | Packet::UnsubAck(_) => awaited -= 1,
                    Packet::Disconnect(d) => return Err(BridgeError::Local(d.reason_code)),
                    _ => {}
                }
            }
        }
        if awaited > 0 {
            batch = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .ok()
                .flatten()
                .ok_or_else(lost)?;
        }
    }
    // Whatever was delivered meanwhile stays unacknowledged, sent again on the next link.
    let _ = link
        .tx
        .send(Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    Ok(())
}

fn local_error(e: ClientError) -> BridgeError {
    match e {
        ClientError::Refused(code) => BridgeError::Local(code),
        _ => BridgeError::Local(ReasonCode::UnspecifiedError),
    }
}

/// Filters once each, at the highest QoS asked for them.
fn filters(rules: impl Iterator<Item = (TopicFilter, QoS)>) -> Vec<(TopicFilter, QoS)> {
    let mut out: Vec<(TopicFilter, QoS)> = Vec::new();
    for (filter, qos) in rules {
        match out.iter_mut().find(|(f, _)| *f == filter) {
            Some((_, q)) => *q = (*q).max(qos),
            None => out.push((filter, qos)),
        }
    }
    out
}

/// A bridge's subscription: no echo, retain flags as published, retained messages only
/// for a new subscription (a resumed session already had them).
fn bridge_options(qos: QoS) -> SubscriptionOptions {
    let mut options = SubscriptionOptions::new(qos);
    options.no_local = true;
    options.retain_as_published = true;
    options.retain_handling = RetainHandling::SendIfNew;
    options
}

fn packet_id(id: u16) -> PacketId {
    PacketId::new(id).unwrap_or(PacketId::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = (Duration::from_secs(1), Duration::from_secs(8));
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (40, 8)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let d = backoff(policy, failures);
                assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn filters_are_subscribed_once_at_the_highest_qos() {
        let f = |s: &str| TopicFilter::new(s).expect("valid");
        let merged = filters(
            [
                (f("a/#"), QoS::AtMostOnce),
                (f("b"), QoS::AtLeastOnce),
                (f("a/#"), QoS::ExactlyOnce),
            ]
            .into_iter(),
        );
        assert_eq!(
            merged,
            vec![(f("a/#"), QoS::ExactlyOnce), (f("b"), QoS::AtLeastOnce)]
        );
    }
}
