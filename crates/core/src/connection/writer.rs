//! A connection's writer task: drains the session's outbox and queue into one batch, writes
//! it, and sleeps until woken.
//!
//! Order on the wire: control packets first (CONNACK, acks, SUBACK, ... in the order the
//! reader produced them), then, once after a session resumes, its unacknowledged messages in
//! their original order (MQTT-4.4.0-1), then queued messages while the inflight window
//! allows.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Disconnect, Packet, ProtocolVersion, PubResponse, PublishQoS, QoS, ReasonCode};
use crate::context::Context;
use crate::gate::Gate;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::plugin::DropReason;
use crate::session::{
    AckKind, CloseReason, Inflight, Link, LinkSignals, Outgoing, Session, SessionState, Stage,
};
use crate::shown::Text;
use crate::transport::PacketWriter;

/// Buffered output (bytes; packets for in-process clients) past which a fill stops and the
/// writer flushes before taking more.
const FILL_LIMIT: usize = 64 * 1024;

/// How long a closing connection reads and discards what the peer still sends, so that its
/// last packet is not lost to a reset (see `PacketReader::discard`).
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Tells the hooks what the last fill delivered or dropped.
fn report(ctx: &Context, client_id: &str, events: &mut Vec<(Arc<Message>, Event)>) {
    for (message, event) in events.drain(..) {
        ctx.policy.hooks.each(&ctx.metrics, |h| match event {
            Event::Delivered(qos) => h.message_delivered(client_id, &message, qos),
            Event::Dropped(reason) => h.message_dropped(client_id, &message, reason),
        });
    }
}

/// Whether the link still owns the session.
#[derive(Debug, PartialEq, Eq)]
enum Fill {
    Attached,
    Detached,
}

pub(crate) struct Writer<W> {
    pub(crate) wire: W,
    pub(crate) session: Arc<Session>,
    pub(crate) link_id: u64,
    pub(crate) version: ProtocolVersion,
    pub(crate) signals: Arc<LinkSignals>,
    pub(crate) ctx: Arc<Context>,
    /// The client's Maximum Packet Size (v5): larger packets are never sent to it.
    pub(crate) client_max_packet: Option<NonZeroU32>,
    /// The connection's `Limits::close_flush_timeout`, in milliseconds (kept small: every
    /// connection's task holds it).
    pub(crate) close_flush_ms: u32,
    /// The client's Request Problem Information (v5): when false, Reason Strings and User
    /// Properties go only on PUBLISH, CONNACK and DISCONNECT (MQTT-3.1.2-29).
    pub(crate) problem_info: bool,
    /// Topic aliases towards the client and what fills gathered for after the session
    /// lock, boxed together: made for a client that accepts topic aliases (v5), else by the
    /// first fill that has something (most connections have no hooks or storage to tell).
    pub(crate) gathered: Option<Box<Gathered>>,
    /// Control packets are waiting for storage to become durable.
    pub(crate) waiting_on_storage: bool,
    /// Wakes the writer when more becomes durable (with storage only).
    pub(crate) durable: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Gathered under the session lock, handled once it is released; and the topic aliases,
/// which share the box (see `Writer::gathered`).
#[derive(Default)]
pub(crate) struct Gathered {
    /// Topic aliases used towards the client (v5, when it accepts them).
    pub(crate) aliases: Option<super::aliases::OutboundAliases>,
    /// Delivery outcomes, for the hooks.
    events: Vec<(Arc<Message>, Event)>,
    /// Storage operations, submitted together.
    store_ops: Vec<roost_storage::Op>,
}

impl Gathered {
    /// The box of a writer whose client accepts topic aliases.
    pub(crate) fn with_aliases(aliases: super::aliases::OutboundAliases) -> Box<Self> {
        Box::new(Self {
            aliases: Some(aliases),
            ..Self::default()
        })
    }
}

/// A delivery outcome for the hooks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Delivered(QoS),
    Dropped(DropReason),
}

impl<W: PacketWriter> Writer<W> {
    /// Runs until the connection closes. Returns the wire, flushed but still open: the
    /// reader closes it after detaching the session, so a client that sees the connection
    /// close can rely on the session already being detached.
    ///
    /// A plain function returning the future: an `async fn` would hold `self` twice (its
    /// argument and the body's copy) for as long as the connection lives.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(crate) fn run(mut self) -> impl std::future::Future<Output = W> + Send {
        async move {
            loop {
                let closing = self.signals.is_closed();
                // Mark the durable point seen before looking at it, so no advance is missed.
                if let Some(d) = &mut self.durable {
                    d.borrow_and_update();
                }
                let fill = {
                    let session = Arc::clone(&self.session);
                    let mut st = session.state.lock();
                    self.fill(&mut st, closing)
                };
                if let Some(gathered) = &mut self.gathered {
                    if !gathered.events.is_empty() {
                        report(&self.ctx, &self.session.client_id, &mut gathered.events);
                    }
                    if !gathered.store_ops.is_empty() {
                        let ops = std::mem::take(&mut gathered.store_ops);
                        self.ctx.journal.store_now(ops);
                    }
                }
                if closing || fill == Fill::Detached {
                    // Boxed: it runs once, and inline it would enlarge every connection.
                    Box::pin(self.finish()).await;
                    return self.wire;
                }
                if self.wire.pending() > 0 {
                    // A flush to a client that does not read may wait long: closing ends it.
                    let (signals, wire, ctx) = (&self.signals, &mut self.wire, &self.ctx);
                    let flushed = std::future::poll_fn(|cx| {
                        if signals.closing(cx).is_ready() {
                            return std::task::Poll::Ready(None);
                        }
                        wire.poll_flush(cx, &ctx.metrics).map(Some)
                    })
                    .await;
                    let Some(flushed) = flushed else { continue };
                    if flushed.is_err() {
                        self.signals.close(CloseReason::Silent);
                        continue;
                    }
                    continue;
                }
                // Until something is queued, the connection closes, or (with storage) more
                // becomes durable. One poll function, not a select of futures: an idle
                // connection's task holds nothing for this wait but the box of the storage
                // wait, and that only while control packets wait on storage.
                let mut durable = match (&mut self.durable, self.waiting_on_storage) {
                    (Some(d), true) => Some(Box::pin(d.changed())),
                    _ => None,
                };
                let signals = &self.signals;
                std::future::poll_fn(|cx| {
                    if signals.woken(cx).is_ready() {
                        return std::task::Poll::Ready(());
                    }
                    match durable.as_mut() {
                        Some(changed) => changed.as_mut().poll(cx).map(drop),
                        None => std::task::Poll::Pending,
                    }
                })
                .await;
            }
        }
    }

    /// The client's Maximum Packet Size, if it set one.
    fn client_max(&self) -> Option<u32> {
        self.client_max_packet.map(NonZeroU32::get)
    }

    /// The topic aliases towards the client, if it accepts them.
    fn aliases(&mut self) -> Option<&mut super::aliases::OutboundAliases> {
        self.gathered.as_mut().and_then(|g| g.aliases.as_mut())
    }

    /// Where a fill gathers hook events and storage operations.
    fn gathered(&mut self) -> &mut Gathered {
        self.gathered.get_or_insert_with(Box::default)
    }

    /// Writes what is left and the goodbye, bounded in time.
    async fn finish(&mut self) {
        if self.version.is_v5() {
            let code = match self.signals.reason() {
                CloseReason::Shutdown => Some(crate::codec::ReasonCode::ServerShuttingDown),
                CloseReason::Disconnect(code) => Some(code),
                CloseReason::Silent => None,
            };
            if let Some(code) = code {
                let mut disconnect = Disconnect::new(code);
                disconnect.properties.reason_string = Some(code.description().into());
                self.send_control(Packet::Disconnect(disconnect));
            }
        }
        let close_flush = Duration::from_millis(u64::from(self.close_flush_ms));
        let _ = tokio::time::timeout(close_flush, self.wire.flush(&self.ctx.metrics)).await;
    }

    /// Buffers a control packet, leaving out diagnostics the client did not ask for or that
    /// would make it exceed the client's Maximum Packet Size (MQTT-3.1.2-29, and the "MUST
    /// NOT send this property if it would increase the size beyond the Maximum Packet Size"
    /// rules of each packet).
    fn send_control(&mut self, mut packet: Packet) {
        let v = self.version;
        if v.is_v5() {
            let exempt = matches!(packet, Packet::ConnAck(_) | Packet::Disconnect(_));
            if !self.problem_info && !exempt {
                strip_diagnostics(&mut packet);
            }
            if let Some(max) = self.client_max() {
                if packet.encoded_len(v).is_ok_and(|n| n > max as usize) {
                    strip_diagnostics(&mut packet);
                }
                if packet.encoded_len(v).is_ok_and(|n| n > max as usize) {
                    tracing::debug!(packet = ?packet.packet_type(), "packet over the client's maximum size: not sent");
                    return;
                }
            }
        }
        if let Err(e) = self.wire.packet(&packet, v) {
            tracing::warn!(client_id = %Text(&self.session.client_id), error = %e, packet = ?packet.packet_type(), "cannot encode packet");
        }
    }

    /// Buffers a queued control packet.
    fn send_outgoing(&mut self, packet: Outgoing) {
        match packet {
            // No properties to strip: only a Maximum Packet Size below its few bytes
            // could stop it, and that is `send_control`'s check.
            Outgoing::Ack(..) if self.client_max().is_none_or(|max| max >= 5) => {
                if let Err(e) = self.wire.packet(&packet.into_packet(), self.version) {
                    tracing::warn!(client_id = %Text(&self.session.client_id), error = %e, "cannot encode acknowledgement");
                }
            }
            packet => self.send_control(packet.into_packet()),
        }
    }

    /// Buffers one PUBLISH, with a Topic Alias when the client accepts them and the packet
    /// stays within the client's Maximum Packet Size with one.
    fn send_publish(
        &mut self,
        delivery: &crate::message::Delivery,
        qos: PublishQoS,
        dup: bool,
    ) -> Result<(), crate::codec::EncodeError> {
        let v = self.version;
        let client_max = self.client_max();
        let mut alias = None;
        if let Some(aliases) = self.aliases() {
            alias = aliases.alias_for(&delivery.message.topic);
            // Setting an alias adds at most four bytes (the property and a longer Property
            // Length), which may not fit the client's Maximum Packet Size; using one only
            // removes bytes. So the size is looked at only when an alias is set.
            if let (Some(crate::codec::TopicAliasUse::Set(a)), Some(max)) = (alias, client_max) {
                let len = delivery
                    .message
                    .wire_len(v, qos, &delivery.subscription_ids);
                if len.saturating_add(4) > max as usize {
                    aliases.forget(a);
                    alias = None;
                }
            }
        }
        let r = self.wire.publish(delivery, qos, dup, v, alias);
        if let (Err(_), Some(crate::codec::TopicAliasUse::Set(a)), Some(aliases)) =
            (&r, alias, self.aliases())
        {
            // Not sent: the client never learned this alias.
            aliases.forget(a);
        }
        r
    }

    /// Forgets a queued delivery that will not be sent (its storage record and packet id
    /// too) and tells the hooks why.
    fn unsent(
        &mut self,
        st: &mut SessionState,
        delivery: crate::message::Delivery,
        reason: DropReason,
        hooks: bool,
    ) {
        if let Some(seq) = st.drop_queued(&delivery) {
            let client_id = &self.session.client_id;
            let op = crate::persist::journal::delivery_done(client_id, seq);
            self.gathered().store_ops.push(op);
        }
        if hooks {
            let event = (delivery.message, Event::Dropped(reason));
            self.gathered().events.push(event);
        }
    }

    /// Moves what may leave now into the wire's buffer: control packets (those waiting on
    /// storage once it is durable), then unacknowledged messages after a resume, then queued
    /// messages while the inflight window allows.
    fn fill(&mut self, st: &mut SessionState, closing: bool) -> Fill {
        let window = {
            let SessionState {
                link,
                inflight,
                inbound_qos2,
                client,
                ..
            } = st;
            let Some(link) = link.as_mut().filter(|l| l.id == self.link_id) else {
                return Fill::Detached;
            };
            self.release_settled(link, inbound_qos2);
            if !link.outbox.is_empty() {
                // Taken whole: an idle connection then holds no outbox allocation.
                for packet in std::mem::take(&mut link.outbox) {
                    self.send_outgoing(packet);
                }
            }
            if link.resend {
                link.resend = false;
                self.resend(inflight, client.as_deref());
            }
            usize::from(link.window)
        };
        if closing {
            return Fill::Attached;
        }
        if st.inflight.sweeping() {
            self.sweep(&mut st.inflight);
            return Fill::Attached;
        }
        self.fill_queue(st, window);
        st.after_drain(self.ctx.settings.limits.flow_control_queue);
        Fill::Attached
    }

    /// Writes the PUBRELs a sweep still owes (see `session::inflight::Sweep`), a batch at a
    /// time; the fill after the last PUBCOMP sends the queue.
    fn sweep(&mut self, inflight: &mut Inflight) {
        while self.wire.pending() < FILL_LIMIT {
            let Some(id) = inflight.next_swept(self.link_id) else {
                break;
            };
            let release = Outgoing::Ack(AckKind::PubRel, id, ReasonCode::Success);
            self.send_outgoing(release);
        }
    }

    /// Moves gated control packets whose writes are now durable (or failed) to the outbox,
    /// in order; a failed write turns its acknowledgement into a refusal.
    fn release_settled(&mut self, link: &mut Link, inbound_qos2: &mut crate::session::IdSet) {
        let Some(p) = self.ctx.journal.persistence() else {
            return;
        };
        let v = self.version;
        let Some(pending) = link.pending.as_mut() else {
            self.waiting_on_storage = false;
            return;
        };
        while let Some(&(gate, _)) = pending.front() {
            if !p.settled(gate) {
                break;
            }
            let Some((gate, mut packet)) = pending.pop_front() else {
                break;
            };
            if p.failed(gate) {
                let mut refused = packet.into_packet();
                if !refuse(&mut refused, v) {
                    // 3.1.1 has no refusal for a PUBLISH it already took: close instead.
                    self.signals.close(CloseReason::Silent);
                    continue;
                }
                // A refusing PUBREC ends the QoS 2 exchange: no PUBREL will come, and the
                // id may carry a new message.
                if let Packet::PubRec(r) = &refused {
                    inbound_qos2.remove(&r.packet_id.get());
                }
                packet = refused.into();
            }
            link.outbox.push_back(packet);
        }
        self.waiting_on_storage = !pending.is_empty();
    }

    /// After a resume: every unacknowledged message and PUBREL again, in their original
    /// order (MQTT-4.4.0-1, MQTT-4.6.0-1), PUBLISHes with DUP.
    fn resend(
        &mut self,
        inflight: &crate::session::Inflight,
        client: Option<&crate::plugin::ClientInfo>,
    ) {
        let v = self.version;
        for entry in inflight.entries() {
            let r = match entry.stage {
                Stage::Published => {
                    // Transformed again (a fresh form: a new nonce, say). One that may not
                    // be sent stays unacknowledged and is tried again on the next resume.
                    let Ok(form) = self.form(client, &entry.delivery) else {
                        continue;
                    };
                    Metrics::inc(&self.ctx.metrics.messages_sent);
                    let qos = PublishQoS::new(entry.delivery.qos, entry.id);
                    self.send_publish(form.as_ref().unwrap_or(&entry.delivery), qos, true)
                }
                Stage::Released => self
                    .wire
                    .packet(&Packet::PubRel(PubResponse::new(entry.id)), v),
            };
            if let Err(e) = r {
                tracing::warn!(client_id = %Text(&self.session.client_id), error = %e, "cannot re-send an inflight message");
            }
        }
    }

    /// Queued messages, while the inflight window allows and the batch is not full.
    fn fill_queue(&mut self, st: &mut SessionState, window: usize) {
        let ctx = Arc::clone(&self.ctx);
        let metrics = &ctx.metrics;
        let screen = Screen {
            now: tokio::time::Instant::now(),
            hooks: !ctx.policy.hooks.is_empty(),
            // Deliveries authorized under other rules (before an authorizer change, or by
            // the process that stored them) are checked again now.
            recheck: !ctx.policy.open_access(),
            epoch: ctx.policy.authz_epoch(),
        };
        let mut taken = 0usize;
        // Counted once per fill: the counter is shared by every writer and reader, and an
        // atomic add per delivery kept its cache line moving between the cores.
        let mut sent = 0u64;
        // Shared runs go out as they are encoded unless something looks at each copy: the
        // hooks, a delivery transform, topic aliases (see `session::Run`).
        let runs = !screen.hooks && ctx.policy.transforms.is_empty() && self.aliases().is_none();
        let mut run_bytes = 0usize;
        while st.inflight.len() < window {
            if runs && st.queue.front_run().is_some() {
                if run_bytes >= FILL_LIMIT {
                    break; // flushed before the next run (see below)
                }
                if let Some((messages, bytes)) = self.send_run(st, &screen) {
                    sent += messages as u64;
                    run_bytes += bytes;
                    continue;
                }
            }
            // A batch is bounded: past FILL_LIMIT buffered (looked at every 64 messages), the
            // writer flushes and comes back for more, so a long queue or retained backlog
            // of QoS 0 messages is never encoded into one huge buffer.
            taken += 1;
            if taken.is_multiple_of(64) && self.wire.pending() >= FILL_LIMIT {
                break;
            }
            let Some(withdrawn) = self.front_ready(st, window) else {
                break;
            };
            let Some(delivery) = st.pop() else {
                break;
            };
            let Some((delivery, form)) = self.screen(st, delivery, withdrawn, &screen) else {
                continue;
            };
            // The packet id was stored with the message, so a restart re-sends it under the
            // same id; only "might have been sent" needs recording, as DUP.
            let dup = delivery.maybe_sent;
            let hooked = screen.hooks.then(|| Arc::clone(&delivery.message));
            let qos0;
            // QoS 1/2: sent as the inflight window keeps it (no copy of the delivery).
            let (qos, queued) = match delivery.qos {
                QoS::AtMostOnce => {
                    qos0 = delivery;
                    (PublishQoS::AtMostOnce, &qos0)
                }
                qos => match st.start_inflight(delivery) {
                    Some(entry) => (PublishQoS::new(qos, entry.id), &entry.delivery),
                    None => break,
                },
            };
            sent += 1;
            let out = form.as_ref().unwrap_or(queued);
            if let Err(e) = self.send_publish(out, qos, dup) {
                tracing::warn!(client_id = %Text(&self.session.client_id), error = %e, topic = %Text(out.message.topic.as_str()), "cannot encode message");
            }
            if let Some(message) = hooked {
                self.gathered()
                    .events
                    .push((message, Event::Delivered(qos.qos())));
            }
        }
        Metrics::add(&metrics.messages_sent, sent);
    }

    /// Whether the queue's next delivery may leave now: `None` if it waits for storage;
    /// else whether a write it depends on failed (it is withdrawn). Retained messages
    /// released by a subscription join the queue first if it is empty.
    fn front_ready(&mut self, st: &mut SessionState, window: usize) -> Option<bool> {
        let ctx = &*self.ctx;
        // Retained messages join the queue as it empties (never ahead of a control packet
        // still waiting, such as their SUBACK).
        if st.queue.is_empty()
            && st.retained_backlog.is_some()
            && st.link.as_ref().is_some_and(Link::nothing_gated)
        {
            let room = window.saturating_sub(st.inflight.len()).max(16);
            let refused = st.refill_retained(
                &self.session.client_id,
                room,
                &ctx.settings.limits,
                ctx.journal.queue(),
            );
            Metrics::add(&ctx.metrics.messages_dropped, refused as u64);
        }
        // A stored delivery leaves only once its record (and packet id) is durable, and a
        // held message once its publisher's acknowledgement could leave.
        let (Some(front), Some(p)) = (st.queue.front_delivery(), ctx.journal.persistence()) else {
            return Some(false);
        };
        match storage_state(p, front) {
            StorageState::Ready => Some(false),
            StorageState::Waiting => {
                self.waiting_on_storage = true;
                None
            }
            StorageState::Failed => Some(true),
        }
    }

    /// Sends the shared run the queue starts with as it is encoded, if this client takes it
    /// so: every copy checked by the authorizers in the current epoch (or no check needed),
    /// none over the client's Maximum Packet Size, and a wire that takes encoded packets.
    /// Returns the messages and bytes buffered; `None` leaves the run to be taken copy by
    /// copy.
    fn send_run(&mut self, st: &mut SessionState, screen: &Screen) -> Option<(usize, usize)> {
        let copy = st.queue.front_run()?;
        if screen.recheck && copy.authorized_epoch != screen.epoch {
            return None;
        }
        let form = copy.run.encoded(self.version).ok()?;
        if self
            .client_max()
            .is_some_and(|max| form.largest > max as usize)
        {
            return None;
        }
        let messages = copy.run.len();
        if !self.wire.encoded(&form.bytes) {
            return None;
        }
        let bytes = form.bytes.len();
        st.take_run();
        Some((messages, bytes))
    }

    /// The form of `delivery` this client gets from the delivery transforms: `None` for the
    /// delivery itself (no transform, or none changed it), `Err` with why it may not be
    /// sent (withheld by a transform, with no client to ask about, or too large once
    /// transformed).
    fn form(
        &self,
        client: Option<&crate::plugin::ClientInfo>,
        delivery: &crate::message::Delivery,
    ) -> Result<Option<crate::message::Delivery>, DropReason> {
        let transforms = &self.ctx.policy.transforms;
        if transforms.is_empty() {
            return Ok(None);
        }
        let metrics = &self.ctx.metrics;
        // Fail closed: a transform decides per client, so without one nothing is sent.
        let Some(message) = client
            .ok_or(())
            .and_then(|c| transforms.apply(metrics, c, &delivery.message))
            .map_err(|()| {
                Metrics::inc(&metrics.messages_withheld);
                DropReason::NotAuthorized
            })?
        else {
            return Ok(None);
        };
        let form = crate::message::Delivery {
            message,
            subscription_ids: delivery.subscription_ids.clone(),
            ..*delivery
        };
        if self.client_max().is_some_and(|max| {
            let probe = PublishQoS::new(form.qos, crate::codec::PacketId::MIN);
            form.message
                .wire_len(self.version, probe, &form.subscription_ids)
                > max as usize
        }) {
            Metrics::inc(&metrics.messages_dropped_too_large);
            return Err(DropReason::TooLarge);
        }
        Ok(Some(form))
    }

    /// The delivery if it may still be sent, with the form this client gets (see
    /// [`Writer::form`]); otherwise forgets it and counts why.
    fn screen(
        &mut self,
        st: &mut SessionState,
        delivery: crate::message::Delivery,
        withdrawn: bool,
        screen: &Screen,
    ) -> Option<(crate::message::Delivery, Option<crate::message::Delivery>)> {
        let ctx = &*self.ctx;
        let metrics = &ctx.metrics;
        let dropped = if withdrawn {
            // Its publisher was refused (or its own record was not stored): a message whose
            // acknowledgement refused it reaches no subscriber.
            Metrics::inc(&metrics.messages_withdrawn_storage);
            DropReason::StorageFull
        } else if delivery.message.is_expired(screen.now) {
            // MQTT-3.3.2-5: an expired message is not sent.
            Metrics::inc(&metrics.messages_expired);
            DropReason::Expired
        } else if screen.recheck
            && delivery.authorized_epoch != screen.epoch
            && !st.client.as_ref().is_some_and(|c| {
                ctx.policy
                    .authorize_receive(c, &delivery.message.topic, delivery.qos)
            })
        {
            Metrics::inc(&metrics.messages_denied_on_send);
            tracing::debug!(topic = %delivery.message.topic, "queued message no longer authorized: withdrawn");
            DropReason::NotAuthorized
        } else if self.client_max().is_some_and(|max| {
            // MQTT-3.1.2-24/-25: too large for the client: discarded as if sent.
            let probe = PublishQoS::new(delivery.qos, crate::codec::PacketId::MIN);
            delivery
                .message
                .wire_len(self.version, probe, &delivery.subscription_ids)
                > max as usize
        }) {
            Metrics::inc(&metrics.messages_dropped_too_large);
            DropReason::TooLarge
        } else {
            match self.form(st.client.as_deref(), &delivery) {
                Ok(form) => return Some((delivery, form)),
                Err(reason) => reason,
            }
        };
        self.unsent(st, delivery, dropped, screen.hooks);
        None
    }
}

/// What [`Writer::screen`] checks each delivery against, read once per fill.
struct Screen {
    now: tokio::time::Instant,
    hooks: bool,
    recheck: bool,
    epoch: u32,
}

/// Where a queued delivery stands with storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageState {
    /// Nothing to wait for.
    Ready,
    /// Its record, or its publisher's writes, are not durable yet (or routing is still in
    /// progress).
    Waiting,
    /// A write it depends on failed.
    Failed,
}

fn storage_state(p: &crate::persist::Persistence, d: &crate::message::Delivery) -> StorageState {
    let own = Gate::seq(d.gate);
    let held = match d.message.hold() {
        None => Gate::NONE,
        Some(None) => return StorageState::Waiting,
        Some(Some(gate)) => gate,
    };
    if !p.settled(own) || !p.settled(held) {
        StorageState::Waiting
    } else if p.failed(own) || p.failed(held) {
        StorageState::Failed
    } else {
        StorageState::Ready
    }
}

/// Removes Reason Strings and User Properties from a server-sent packet.
fn strip_diagnostics(packet: &mut Packet) {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            r.properties = Default::default();
        }
        Packet::SubAck(a) => a.properties = Default::default(),
        Packet::UnsubAck(a) => a.properties = Default::default(),
        Packet::Auth(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
        }
        Packet::ConnAck(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        _ => {}
    }
}

/// Turns an acknowledgement whose storage write failed into a refusal. False if the
/// protocol level has no way to refuse it (3.1.1 PUBACK/PUBREC): the connection must close.
fn refuse(packet: &mut Packet, v: ProtocolVersion) -> bool {
    use crate::codec::ReasonCode;
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) if v.is_v5() => {
            r.reason_code = ReasonCode::UnspecifiedError;
            r.properties.reason_string = Some("storage failure".into());
            true
        }
        Packet::PubAck(_) | Packet::PubRec(_) => false,
        Packet::SubAck(a) => {
            for code in &mut a.reason_codes {
                *code = ReasonCode::UnspecifiedError;
            }
            true
        }
        _ => true,
    }
}
