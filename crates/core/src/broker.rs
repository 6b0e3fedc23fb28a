//! The embedding API: [`Broker::builder`], [`Broker::start`], [`BrokerHandle`].
//!
//! A broker runs on the caller's tokio runtime: it spawns its tasks with `tokio::spawn`
//! (tracked, so shutdown can wait for them), installs no logger, signal handler or thread
//! pool, and keeps no global state, so several brokers can live in one process.
//!
//! # Shutdown
//! [`BrokerHandle::shutdown`] cancels one token. Listeners stop accepting; every connection
//! (network or in-process) stops between packets, sends v5 clients DISCONNECT 0x8B, flushes
//! what it had queued (bounded by a timeout), and ends; `shutdown` returns when the last task
//! has finished.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admissions, ListenerCap, Slots, Ticket};
use crate::codec::{LastWill, Packet, PublishProperties, QoS, ReasonCode};
use crate::config::{Capabilities, Limits};
use crate::connection::{self, PeerInfo};
use crate::error::Error;
use crate::message::{Hold, Message};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::persist::{self, Durability, Gate, Persistence};
use crate::plugin::{
    Authenticator, Authorizer, AuthorizerChain, ClientInfo, HookAction, HookChain, Hooks,
    PluginSettings, PublishedMessage,
};
use crate::policy::{AnonymousAccess, AnonymousDecision, Exposure, SessionOwnership};
use crate::router::{RetainChange, RouteOutcome, Router};
use crate::session::SessionState;
use crate::session::{CloseReason, Link, LinkSignals, Session};
use crate::throttle::AuthThrottle;
use crate::timers::{Due, TimerKind, Timers};
use crate::topic::TopicName;
use crate::transport::listener::{ErasedListener, Listener};
use crate::transport::proxy;
use crate::transport::tls::TlsConfig;
use crate::transport::ws;
use crate::transport::{NetReader, NetWriter};
use roost_storage::{Op, Storage};

/// State shared by every task of one broker.
pub(crate) struct Shared {
    /// This broker, for work that must continue in a task of its own (an async check).
    me: std::sync::Weak<Shared>,
    pub(crate) limits: Limits,
    pub(crate) capabilities: Capabilities,
    pub(crate) plugins: PluginSettings,
    pub(crate) authenticators: Vec<Arc<dyn Authenticator>>,
    pub(crate) authorizers: RwLock<AuthorizerChain>,
    /// No authorizer is registered (kept beside `authorizers`; read on every publish and
    /// delivery without taking the lock).
    pub(crate) open_access: std::sync::atomic::AtomicBool,
    pub(crate) hooks: HookChain,
    pub(crate) timers: Timers,
    pub(crate) router: Router,
    pub(crate) metrics: Arc<Metrics>,
    /// Storage, when the broker persists its state.
    pub(crate) persistence: Option<Persistence>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    sessions: Mutex<HashMap<ByteString, Arc<Session>>>,
    next_id: AtomicU64,
    open_connections: AtomicUsize,
    client_id_prefix: String,
    /// Who may resume a session (see [`SessionOwnership`]).
    pub(crate) ownership: SessionOwnership,
    /// Whether clients nobody vouched for may connect, decided at start.
    pub(crate) anonymous: AnonymousDecision,
    /// Bumped each time the authorizers are replaced. A queued delivery records the epoch
    /// it was authorized in; one from another epoch (or restored from storage, epoch 0) is
    /// checked again when it is sent.
    authz_epoch: std::sync::atomic::AtomicU32,
    /// Connections not yet authenticated.
    admissions: Arc<Admissions>,
    /// Back-off after failed authentication.
    pub(crate) auth_throttle: AuthThrottle,
    /// Limits the log lines of refused TLS handshakes per client address.
    pub(crate) tls_log: crate::throttle::LogLimiter,
    /// Bytes queued across all sessions (`Limits::max_total_queued_bytes`).
    pub(crate) total_queued: Arc<AtomicUsize>,
}

/// What a connection brings to [`Shared::attach`].
pub(crate) struct AttachRequest {
    pub(crate) client_id: ByteString,
    pub(crate) clean_start: bool,
    pub(crate) expiry_interval: u32,
    pub(crate) signals: Arc<LinkSignals>,
    /// Outbound inflight window for this connection.
    pub(crate) window: usize,
    pub(crate) client: Arc<ClientInfo>,
}

/// Releases a connection slot when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .field("capabilities", &self.capabilities)
            .field("authenticators", &self.authenticators.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: BrokerBuilder) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let persistence = config.storage.map(|(storage, durability)| {
            Persistence::start(
                storage,
                durability,
                config.limits.max_storage_bytes,
                Arc::clone(&metrics),
            )
        });
        let exposure = Exposure {
            authenticators: !config.authenticators.is_empty(),
            non_loopback_listener: config.listeners.iter().any(|l| !l.addr.ip().is_loopback()),
            proxy_protocol: config.listeners.iter().any(|l| l.options.proxy)
                || config.custom.iter().any(|l| l.options.proxy),
            client_certificates: config.listeners.iter().any(|l| match &l.kind {
                ListenerKind::Tls(t) | ListenerKind::Wss(t, _) => t.asks_client_certificates(),
                _ => false,
            }),
            custom_listener: config.custom.iter().any(|l| !l.local_only),
        };
        let anonymous = config.anonymous.decide(exposure);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            limits: config.limits,
            capabilities: config.capabilities,
            plugins: config.plugins,
            authenticators: config.authenticators,
            open_access: std::sync::atomic::AtomicBool::new(config.authorizers.is_empty()),
            authorizers: RwLock::new(Arc::new(config.authorizers)),
            hooks: config.hooks,
            timers: Timers::default(),
            router: Router::default(),
            metrics,
            persistence,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
            client_id_prefix: format!("roost-{:x}{:x}", std::process::id(), nanos),
            ownership: config.ownership,
            anonymous,
            authz_epoch: std::sync::atomic::AtomicU32::new(1),
            admissions: Arc::new(Admissions::default()),
            auth_throttle: AuthThrottle::default(),
            tls_log: Default::default(),
            total_queued: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Brings the gauges that are read from elsewhere up to date.
    pub(crate) fn refresh_gauges(&self) {
        Metrics::set(
            &self.metrics.queued_bytes,
            self.total_queued.load(Ordering::Relaxed) as u64,
        );
        Metrics::set(
            &self.metrics.retained_bytes,
            self.router.retained_bytes() as u64,
        );
    }

    /// The authorizers' epoch (see `authz_epoch`); never 0.
    pub(crate) fn authz_epoch(&self) -> u32 {
        self.authz_epoch.load(Ordering::Acquire)
    }

    /// True if a session whose authorization context is `owner` may be resumed by
    /// `client`: the same authenticated identity. A session whose owner is unknown (restored
    /// from a record written before owners were stored) is resumed only by an open broker,
    /// one where no authenticator checks identities.
    fn owned_by(&self, owner: Option<&ClientInfo>, client: &ClientInfo) -> bool {
        match owner {
            Some(owner) => owner.identity.username == client.identity.username,
            None => self.authenticators.is_empty(),
        }
    }

    /// A fresh session uid.
    pub(crate) fn next_uid(&self) -> u64 {
        self.next_id()
    }

    /// Adds a recovered session to the table.
    pub(crate) fn insert_session(&self, session: Arc<Session>) {
        self.sessions
            .lock()
            .insert(session.client_id.clone(), session);
        Metrics::inc(&self.metrics.sessions);
    }

    /// Submits storage operations and returns the sequence number an acknowledgement must
    /// wait for (0 without storage, or in Periodic mode).
    pub(crate) fn store_gated(&self, ops: Vec<Op>) -> Gate {
        match &self.persistence {
            Some(p) => Gate::seq(p.gate(p.submit_now(ops))),
            None => Gate::NONE,
        }
    }

    /// Submits storage operations that nothing waits for.
    pub(crate) fn store_now(&self, ops: Vec<Op>) {
        if let Some(p) = &self.persistence {
            p.submit_now(ops);
        }
    }

    /// The storage record of a session, if it is persistent and storage is on.
    pub(crate) fn session_op(&self, session: &Session, st: &SessionState) -> Option<Op> {
        self.persistence.as_ref()?;
        (st.expiry_interval > 0).then(|| persist::journal::session_saved(&session.client_id, st))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a new pending (not yet authenticated) connection from `source`, dropping
    /// the oldest pending one if a bound is reached (see [`crate::admission`]).
    pub(crate) fn admit(&self, source: Option<std::net::IpAddr>) -> Ticket {
        self.admissions.admit(source, &self.limits, &self.metrics)
    }

    /// True when `max_connections` authenticated connections are open.
    pub(crate) fn connections_full(&self) -> bool {
        self.open_connections.load(Ordering::Acquire) >= self.limits.max_connections
    }

    /// An authenticated connection leaves the pending ones and takes its places: one of
    /// `max_connections` and one of its listener's cap. In-process clients take none. `Err`
    /// is the CONNACK code refusing it when the broker (or the listener) is full.
    pub(crate) fn graduate(self: &Arc<Self>, peer: &PeerInfo) -> Result<Slots, ReasonCode> {
        if let Some(ticket) = &peer.ticket {
            ticket.finish();
        }
        if peer.in_process {
            return Ok(Slots::default());
        }
        let Some(slot) = self.open_slot() else {
            Metrics::inc(&self.metrics.connections_refused);
            tracing::info!("max_connections reached: connection refused");
            return Err(ReasonCode::ServerBusy);
        };
        let here = match &peer.listener_cap {
            Some(cap) => match cap.take() {
                Some(count) => Some(count),
                None => {
                    Metrics::inc(&self.metrics.connections_refused);
                    tracing::info!(listener = %peer.listener, "listener connection cap reached: connection refused");
                    return Err(ReasonCode::ServerBusy);
                }
            },
            None => None,
        };
        Ok(Slots::new(slot, here))
    }

    /// Takes a connection slot, or `None` when `max_connections` are open.
    pub(crate) fn open_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.limits.max_connections;
        self.open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(Arc::clone(self)))
    }

    /// A client identifier no client has (MQTT-3.1.3-6).
    pub(crate) fn assign_client_id(&self) -> ByteString {
        format!("{}-{}", self.client_id_prefix, self.next_id()).into()
    }

    /// Retains (if flagged) and routes a message; returns what routing did. Hooks are not
    /// consulted (see [`Shared::publish_message`]). Storage operations are appended to
    /// `ops`, sessions asking the publisher to pause (flow control) to `congested`.
    pub(crate) fn publish(
        &self,
        message: &Arc<Message>,
        ops: &mut Vec<Op>,
        congested: &mut Vec<Arc<Session>>,
    ) -> RouteOutcome {
        if message.retain {
            // Its own copy: the routed message's topic and payload are slices of the read
            // buffer they arrived in, which a retained message would keep alive.
            let change = self.router.retain(message.for_keeping(), &self.limits);
            if self.persistence.is_some() && !message.topic.as_str().starts_with("$SYS/") {
                match change {
                    RetainChange::Set | RetainChange::Replaced => {
                        ops.push(persist::journal::retained_set(message))
                    }
                    RetainChange::Cleared => {
                        ops.push(persist::journal::retained_cleared(message.topic.as_str()))
                    }
                    RetainChange::Unchanged => {}
                }
            }
            match change {
                RetainChange::Set | RetainChange::Cleared | RetainChange::Replaced => {
                    Metrics::set(&self.metrics.retained, self.router.retained_len() as u64);
                }
                RetainChange::Unchanged if !message.payload.is_empty() => {
                    Metrics::inc(&self.metrics.retained_refused);
                }
                RetainChange::Unchanged => {}
            }
            if change == RetainChange::Cleared && !message.payload.is_empty() {
                // Over `max_retained_bytes`: not retained, and the old one removed.
                Metrics::inc(&self.metrics.retained_refused);
            }
            if !self.hooks.is_empty() {
                match change {
                    RetainChange::Set | RetainChange::Replaced => {
                        self.hooks.each(&self.metrics, |h| h.retained_set(message))
                    }
                    RetainChange::Cleared => self
                        .hooks
                        .each(&self.metrics, |h| h.retained_cleared(&message.topic)),
                    RetainChange::Unchanged => {}
                }
            }
        }
        self.router.route(message, self, congested)
    }

    /// Runs the publish hooks, then retains and routes. `None` if a hook dropped the
    /// message. With `hold`, no copy is sent before the hold is released (see [`Hold`]).
    pub(crate) fn publish_message(
        &self,
        client: Option<&ClientInfo>,
        publisher: Option<ByteString>,
        mut published: PublishedMessage,
        ops: &mut Vec<Op>,
        congested: &mut Vec<Arc<Session>>,
        hold: Option<Arc<Hold>>,
    ) -> Option<RouteOutcome> {
        if !self.hooks.is_empty()
            && self.hooks.published(&self.metrics, client, &mut published) == HookAction::Drop
        {
            return None;
        }
        let message = Message::shared(
            published.topic,
            published.payload,
            published.qos,
            published.retain,
            published.properties,
            publisher,
            hold,
        );
        Some(self.publish(&message, ops, congested))
    }

    /// Publishes a connection's Will Message (MQTT-3.1.2-8), if the authorizers in force
    /// let its client publish it now (see [`Shared::publish_will_as`]).
    pub(crate) fn publish_will(&self, will: LastWill, session: &Session) {
        let client = session.state.lock().client.clone();
        self.publish_will_as(will, session.client_id.clone(), client);
    }

    /// Publishes a will as `client` would publish it. The will was authorized at CONNECT,
    /// but the rules may have changed since (an ACL reload), and a will restored from
    /// storage was authorized by another process: so it is authorized again now, as a
    /// publish of its client. Without a known client it is refused (fail closed). With
    /// authorizers the check is async, so the will goes out from a task of its own.
    pub(crate) fn publish_will_as(
        &self,
        will: LastWill,
        client_id: ByteString,
        client: Option<Arc<ClientInfo>>,
    ) {
        if self.open_access() {
            self.publish_will_now(will, client_id, client.as_deref());
            return;
        }
        let Some(client) = client else {
            Metrics::inc(&self.metrics.wills_denied);
            tracing::warn!(%client_id, topic = %will.topic, "will refused: its client's authorization context is unknown");
            return;
        };
        let Some(this) = self.me.upgrade() else {
            return;
        };
        self.tracker.spawn(async move {
            match this
                .authorize_publish(&client, &will.topic, will.qos, will.retain)
                .await
            {
                Ok(()) => this.publish_will_now(will, client_id, Some(&client)),
                Err(code) => {
                    Metrics::inc(&this.metrics.wills_denied);
                    tracing::info!(%client_id, topic = %will.topic, reason = %code, "will not authorized: not published");
                }
            }
        });
    }

    /// Publishes an authorized will.
    fn publish_will_now(&self, will: LastWill, client_id: ByteString, client: Option<&ClientInfo>) {
        let p = will.properties;
        let properties = PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..PublishProperties::default()
        };
        tracing::debug!(topic = %will.topic, "publishing will");
        let published = PublishedMessage {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
        };
        let mut ops = Vec::new();
        self.publish_message(
            client,
            Some(client_id),
            published,
            &mut ops,
            &mut Vec::new(),
            None,
        );
        self.store_now(ops);
    }

    /// Attaches a new connection to the session for `client_id`, creating or replacing the
    /// session as Clean Start says and closing any connection that held it (MQTT-3.1.4-2).
    /// The CONNACK built by `connack(session_present)` is the link's first packet.
    ///
    /// A session that belongs to another identity is never resumed: it is discarded, or the
    /// CONNECT is refused with the returned code, as [`SessionOwnership`] says.
    pub(crate) fn attach(
        &self,
        request: AttachRequest,
        connack: impl FnOnce(bool) -> Packet,
    ) -> Result<(Arc<Session>, u64), ReasonCode> {
        let AttachRequest {
            client_id,
            clean_start,
            expiry_interval,
            signals,
            window,
            client,
        } = request;
        let link_id = self.next_id();
        let (session, present, replaced) = {
            let mut map = self.sessions.lock();
            let existing = map.get(&client_id).cloned();
            let mut foreign = false;
            if let Some(old) = &existing {
                let st = old.state.lock();
                foreign = !self.owned_by(st.client.as_deref(), &client);
                if foreign {
                    let owner = st.client.as_ref().and_then(|c| c.identity.username.clone());
                    let claimant = client.identity.username.as_deref();
                    if self.ownership == SessionOwnership::Refuse {
                        drop(st);
                        drop(map);
                        Metrics::inc(&self.metrics.sessions_ownership_refused);
                        tracing::warn!(%client_id, ?owner, ?claimant, "CONNECT refused: the session belongs to another identity");
                        return Err(ReasonCode::NotAuthorized);
                    }
                    Metrics::inc(&self.metrics.sessions_ownership_discarded);
                    tracing::warn!(%client_id, ?owner, ?claimant, "session of another identity discarded: the new client starts a fresh one");
                }
                if let Some(link) = &st.link {
                    link.signals
                        .close(CloseReason::Disconnect(ReasonCode::SessionTakenOver));
                }
            }
            match existing {
                // MQTT-3.1.2-4 / v5 §3.1.2.4: resume the existing session (only for the
                // identity it belongs to).
                Some(s) if !clean_start && !foreign => (s, true, None),
                old => {
                    if old.is_none() && map.len() >= self.limits.max_sessions {
                        drop(map);
                        Metrics::inc(&self.metrics.connections_refused);
                        tracing::warn!(%client_id, max = self.limits.max_sessions, "max_sessions reached: CONNECT refused");
                        return Err(ReasonCode::QuotaExceeded);
                    }
                    let s = Session::new(self.next_id(), client_id.clone(), expiry_interval);
                    s.state.lock().total_queued = Arc::clone(&self.total_queued);
                    map.insert(client_id, Arc::clone(&s));
                    Metrics::inc(&self.metrics.sessions);
                    (s, false, old)
                }
            }
        };
        if let Some(old) = replaced {
            // MQTT-3.1.2-6: Clean Session 1 discards the previous session.
            self.discard(&old);
        }
        {
            let mut st = session.state.lock();
            st.expiry_interval = expiry_interval;
            st.client = Some(client);
            // Back in time: its deadlines are void (one entry per kind and session at most).
            self.timers.cancel(&mut st.timers);
            // MQTT-3.1.3-9 (v5): back within the Will Delay Interval: no will.
            st.pending_will = None;
            st.will_at_ms = None;
            st.disconnected_at_ms = None;
            let resend = present && st.inflight.len() > 0;
            st.link = Some(Link {
                id: link_id,
                signals,
                outbox: VecDeque::from([connack(present)]),
                pending: VecDeque::new(),
                window,
                resend,
            });
            let op = self.session_op(&session, &st);
            drop(st);
            self.store_now(op.into_iter().collect());
        }
        if !self.hooks.is_empty() {
            let id = &session.client_id;
            self.hooks.each(&self.metrics, |h| {
                if present {
                    h.session_resumed(id)
                } else {
                    h.session_created(id)
                }
            });
        }
        Ok((session, link_id))
    }

    /// Detaches link `link_id` from `session` and deals with the connection's will
    /// (`will_delay` in seconds): published now, kept pending until the Will Delay Interval
    /// passes, or published when the session ends, whichever comes first (MQTT-3.1.2-8, v5).
    /// A session with Session Expiry Interval 0 ends now; a finite one is armed to expire.
    pub(crate) fn detach(
        &self,
        session: &Arc<Session>,
        link_id: u64,
        will: Option<Box<LastWill>>,
        will_delay: u32,
    ) {
        let mut publish_now = None;
        let end = {
            let mut st = session.state.lock();
            if st.link.as_ref().map(|l| l.id) != Some(link_id) {
                // Taken over: a new connection holds the session. Without a delay the will
                // goes now; with one, the new connection came back in time (MQTT-3.1.3-9),
                // unless the takeover started a new session, which ended this one.
                if will_delay == 0 || st.ended {
                    publish_now = will;
                }
                false
            } else {
                st.link = None;
                st.detached_link = link_id;
                st.disconnected_at_ms = Some(persist::unix_now_ms());
                let expiry = st.expiry_interval;
                match will {
                    Some(w) if will_delay > 0 && expiry > 0 => {
                        st.pending_will = Some(w);
                        let delay = Duration::from_secs(u64::from(will_delay.min(expiry)));
                        st.will_at_ms = Some(persist::unix_now_ms() + delay.as_millis() as u64);
                        let at = Instant::now() + delay;
                        self.timers.schedule(
                            &mut st.timers,
                            at,
                            session,
                            link_id,
                            TimerKind::WillDelay,
                        );
                    }
                    other => publish_now = other,
                }
                if expiry > 0 && expiry < u32::MAX {
                    let at = Instant::now() + Duration::from_secs(u64::from(expiry));
                    self.timers.schedule(
                        &mut st.timers,
                        at,
                        session,
                        link_id,
                        TimerKind::SessionExpiry,
                    );
                }
                if let Some(op) = self.session_op(session, &st) {
                    self.store_now(vec![op]);
                }
                expiry == 0
            }
        };
        if let Some(will) = publish_now {
            self.publish_will(*will, session);
        }
        if end {
            self.end_session(session);
        }
    }

    /// Removes `session` from the table (if it is still the one there) and discards it.
    fn end_session(&self, session: &Arc<Session>) {
        {
            let mut map = self.sessions.lock();
            if map
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                map.remove(&session.client_id);
            }
        }
        self.discard(session);
    }

    /// Handles a deadline of the timer queue.
    fn fire(&self, due: Due) {
        let Some(session) = due.session.upgrade() else {
            return;
        };
        let will = {
            let mut st = session.state.lock();
            if st.ended || st.link.is_some() || st.detached_link != due.link_id {
                return; // stale: the client came back, or the session already ended
            }
            match due.kind {
                TimerKind::WillDelay => {
                    let will = st.pending_will.take();
                    st.will_at_ms = None;
                    if let Some(op) = self.session_op(&session, &st) {
                        self.store_now(vec![op]);
                    }
                    will
                }
                TimerKind::SessionExpiry => None,
            }
        };
        match due.kind {
            TimerKind::WillDelay => {
                if let Some(will) = will {
                    self.publish_will(*will, &session);
                }
            }
            TimerKind::SessionExpiry => {
                tracing::debug!(client_id = %session.client_id, "session expired");
                Metrics::inc(&self.metrics.sessions_expired);
                self.hooks
                    .each(&self.metrics, |h| h.session_expired(&session.client_id));
                self.end_session(&session);
            }
        }
    }

    /// Checks every session against the current authorizers (see
    /// [`BrokerHandle::set_authorizers`]): connected clients may be refused outright, and
    /// subscriptions no longer allowed are removed from connected and offline sessions alike.
    /// Messages already queued are checked when they are sent (`authz_epoch`).
    async fn recheck_sessions(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            let (client, filters, connected) = {
                let st = session.state.lock();
                // A session without a known client gets nothing anyway (fail closed).
                let Some(client) = st.client.clone() else {
                    continue;
                };
                let filters: Vec<_> = st
                    .subscriptions
                    .iter()
                    .map(|(f, r)| (f.clone(), r.options.qos))
                    .collect();
                (client, filters, st.link.is_some())
            };
            if connected && self.authorize_client(&client).await.is_err() {
                tracing::info!(client_id = %client.client_id, "access revoked: disconnecting");
                if let Some(link) = &session.state.lock().link {
                    link.signals
                        .close(CloseReason::Disconnect(ReasonCode::AdministrativeAction));
                }
                continue;
            }
            for (filter, qos) in filters {
                if self
                    .authorize_subscribe(&client, &filter, qos)
                    .await
                    .is_err()
                {
                    tracing::info!(client_id = %client.client_id, %filter, "subscription revoked");
                    let (removed, op) = {
                        let mut st = session.state.lock();
                        let removed = st.remove_subscription(&filter).is_some();
                        (removed, self.session_op(&session, &st))
                    };
                    if removed && self.router.unsubscribe(&session, &filter) {
                        Metrics::dec(&self.metrics.subscriptions);
                    }
                    self.store_now(op.into_iter().collect());
                }
            }
        }
    }

    /// Ends a session: drops its queue, removes its subscriptions, and publishes a will
    /// still waiting out its delay (the session's end is the will's deadline). Idempotent.
    fn discard(&self, session: &Session) {
        let (subscriptions, will) = {
            let mut st = session.state.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            st.queue.clear();
            st.queued_bytes = 0;
            st.release_total();
            st.retained_backlog = None;
            st.retained_waiting = 0;
            self.timers.cancel(&mut st.timers);
            (st.take_subscriptions(), st.pending_will.take())
        };
        if self.persistence.is_some() {
            self.store_now(vec![persist::journal::session_ended(&session.client_id)]);
        }
        if let Some(will) = will {
            self.publish_will(*will, session);
        }
        for filter in subscriptions.keys() {
            if self.router.unsubscribe(session, filter) {
                Metrics::dec(&self.metrics.subscriptions);
            }
        }
        Metrics::dec(&self.metrics.sessions);
    }
}

/// A user-supplied listener waiting for the broker that takes it.
type ListenerSlot = Arc<Mutex<Option<Box<dyn ErasedListener>>>>;

/// Builds a [`Broker`].
#[derive(Clone)]
pub struct BrokerBuilder {
    /// Network listeners, in the order they were added.
    listeners: Vec<NetListener>,
    /// User-supplied listeners, taken by the first broker started from this builder.
    custom: Vec<CustomListener>,
    /// The listener added last, which the per-listener setters configure.
    last: Option<LastListener>,
    /// Per-listener setters called before any listener was added: `start` refuses them.
    orphan_options: Vec<&'static str>,
    limits: Limits,
    capabilities: Capabilities,
    plugins: PluginSettings,
    authenticators: Vec<Arc<dyn Authenticator>>,
    authorizers: Vec<Arc<dyn Authorizer>>,
    hooks: HookChain,
    storage: Option<(Arc<dyn Storage>, Durability)>,
    sys_interval: Option<Duration>,
    ownership: SessionOwnership,
    anonymous: AnonymousAccess,
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("listeners", &self.listeners)
            .field("limits", &self.limits)
            .field("capabilities", &self.capabilities)
            .field("authenticators", &self.authenticators.len())
            .finish_non_exhaustive()
    }
}

impl BrokerBuilder {
    /// Adds a TCP listener. Port 0 picks a free port; [`BrokerHandle::local_addrs`] tells
    /// which.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listeners
            .push(NetListener::new(addr, ListenerKind::Tcp));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    /// Adds a TLS listener (MQTT over TLS, usually port 8883). Port 0 picks a free port.
    /// The configuration can be replaced later through the same `Arc` (certificate reload).
    pub fn listen_tls(mut self, addr: SocketAddr, tls: Arc<TlsConfig>) -> Self {
        self.listeners
            .push(NetListener::new(addr, ListenerKind::Tls(tls)));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    /// Adds a listener of your own (see [`Listener`]); `name` is what authenticators and logs
    /// see as the listener. A builder that is cloned shares it: only the first broker
    /// started gets it.
    pub fn listener(mut self, name: impl Into<String>, listener: impl Listener) -> Self {
        let local_only = listener.local_only();
        let boxed: Box<dyn ErasedListener> = Box::new(listener);
        self.custom.push(CustomListener {
            name: Arc::from(name.into()),
            slot: Arc::new(Mutex::new(Some(boxed))),
            local_only,
            options: ListenerOptions::default(),
        });
        self.last = Some(LastListener::Custom(self.custom.len() - 1));
        self
    }

    /// Adds a WebSocket listener (MQTT over WebSocket, subprotocol `mqtt`, binary frames) that
    /// accepts upgrades on `path` (usually `/mqtt`).
    pub fn listen_ws(mut self, addr: SocketAddr, path: impl Into<String>) -> Self {
        self.listeners
            .push(NetListener::new(addr, ListenerKind::Ws(path.into())));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    /// Adds a secure WebSocket listener (WebSocket over TLS) on `path`.
    pub fn listen_wss(
        mut self,
        addr: SocketAddr,
        tls: Arc<TlsConfig>,
        path: impl Into<String>,
    ) -> Self {
        self.listeners
            .push(NetListener::new(addr, ListenerKind::Wss(tls, path.into())));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    /// Requires (`true`) or stops requiring a PROXY protocol header (HAProxy's, version 1 or
    /// 2) on the listener added last (network or [`listener`](Self::listener)), for a broker
    /// behind a load balancer: the client address that authenticators, hooks and logs see
    /// is then the one the balancer reports. A connection without a valid header is closed;
    /// a LOCAL or UNKNOWN header keeps the balancer's own address. The header must arrive
    /// within [`Limits::handshake_timeout`]. Called before any listener was added, it makes
    /// [`Broker::start`] fail ([`Error::ListenerOptionWithoutListener`]).
    pub fn proxy_protocol(self, required: bool) -> Self {
        self.with_last_listener("proxy_protocol", |l| l.proxy = required)
    }

    /// Names the listener added last (network or custom); authenticators
    /// ([`ConnectInfo::listener`](crate::plugin::ConnectInfo::listener)), hooks and logs see
    /// the name, so that each listener can have its own authentication rules (say, password
    /// required on the public TLS port, not on loopback). The default name is the kind and
    /// the bound address, e.g. `tcp:127.0.0.1:1883`, or the name given to
    /// [`listener`](Self::listener). Before any listener, `start` fails.
    pub fn listener_name(self, name: impl Into<String>) -> Self {
        self.with_last_listener("listener_name", |l| l.name = Some(Arc::from(name.into())))
    }

    /// Caps the open connections of the listener added last, network or custom (the
    /// broker-wide [`Limits::max_connections`] still applies). A client over the cap is
    /// refused with CONNACK 0x89 Server busy (3.1.1: 0x03) and counted in
    /// `connections_refused`. Before any listener, `start` fails.
    pub fn listener_max_connections(self, max: usize) -> Self {
        self.with_last_listener("listener_max_connections", |l| {
            l.max_connections = Some(max)
        })
    }

    /// Sets the largest packet accepted on the listener added last (network or custom), in
    /// place of [`Limits::max_packet_size`] (say, small packets on a public port, large ones
    /// on loopback). v5 clients learn it from CONNACK's Maximum Packet Size; a larger packet
    /// closes the connection (0x95 Packet too large in v5). Before any listener, `start`
    /// fails.
    pub fn listener_max_packet_size(self, max: u32) -> Self {
        self.with_last_listener("listener_max_packet_size", |l| {
            l.max_packet_size = Some(max)
        })
    }

    /// Applies a per-listener option to the listener added last (network or custom). With
    /// none added yet, [`Broker::start`] fails with [`Error::ListenerOptionWithoutListener`].
    fn with_last_listener(
        mut self,
        setter: &'static str,
        set: impl FnOnce(&mut ListenerOptions),
    ) -> Self {
        match self.last {
            Some(LastListener::Net(i)) => set(&mut self.listeners[i].options),
            Some(LastListener::Custom(i)) => set(&mut self.custom[i].options),
            None => self.orphan_options.push(setter),
        }
        self
    }

    /// Sets the resource limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets what the broker offers MQTT 5.0 clients (and enforces on every client).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Adds an authenticator; authenticators run in the order added (see
    /// [`plugin`](crate::plugin) for how their answers combine).
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticators.push(authenticator);
        self
    }

    /// Adds an authorizer; authorizers run in the order added. Without any, every client may
    /// publish and subscribe everywhere.
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizers.push(authorizer);
        self
    }

    /// Adds hooks; they run in the order added.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks.push(hooks);
        self
    }

    /// Persists retained messages and persistent sessions in `storage`, durable as
    /// `durability` says (see [`Durability`]). Without storage the broker keeps everything
    /// in memory only ("none").
    pub fn storage(mut self, storage: Arc<dyn Storage>, durability: Durability) -> Self {
        self.storage = Some((storage, durability));
        self
    }

    /// Sets the deadline and failure policy of plugin calls.
    pub fn plugin_settings(mut self, settings: PluginSettings) -> Self {
        self.plugins = settings;
        self
    }

    /// How often the `$SYS/broker/...` counters are published (retained); `None` turns them
    /// off. Default 10 s.
    pub fn sys_interval(mut self, interval: Option<Duration>) -> Self {
        self.sys_interval = interval;
        self
    }

    /// What happens when a client connects with the client identifier of a persistent
    /// session that belongs to another identity. Default [`SessionOwnership::Discard`]; see
    /// [`policy`](crate::policy).
    pub fn session_ownership(mut self, ownership: SessionOwnership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Whether clients that no authenticator vouched for may connect. Default
    /// [`AnonymousAccess::Auto`]: only on a broker with no authenticator whose listeners are
    /// all on loopback addresses (see its docs for the whole rule). In-process clients
    /// ([`BrokerHandle::client`]) of a broker without authenticators are always let in.
    pub fn allow_anonymous(mut self, access: AnonymousAccess) -> Self {
        self.anonymous = access;
        self
    }

    /// The broker, not yet running.
    pub fn build(self) -> Broker {
        Broker { config: self }
    }
}

/// A configured broker. [`Broker::start`] runs it.
#[derive(Debug)]
pub struct Broker {
    config: BrokerBuilder,
}

impl Broker {
    /// A builder with no listeners and default limits.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            listeners: Vec::new(),
            custom: Vec::new(),
            last: None,
            orphan_options: Vec::new(),
            limits: Limits::default(),
            capabilities: Capabilities::default(),
            plugins: PluginSettings::default(),
            authenticators: Vec::new(),
            authorizers: Vec::new(),
            hooks: HookChain::default(),
            storage: None,
            sys_interval: Some(Duration::from_secs(10)),
            ownership: SessionOwnership::default(),
            anonymous: AnonymousAccess::default(),
        }
    }

    /// Binds the listeners and starts serving on the current tokio runtime. A broker with no
    /// listener serves in-process clients only.
    ///
    /// Cancel safety: if the future is dropped before it completes, listeners bound so far
    /// are closed and nothing keeps running.
    pub async fn start(self) -> Result<BrokerHandle, Error> {
        let config = self.config;
        if let Some(setter) = config.orphan_options.first() {
            return Err(Error::ListenerOptionWithoutListener(setter));
        }
        let mut bound = Vec::with_capacity(config.listeners.len());
        for net in &config.listeners {
            let addr = &net.addr;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    addr: *addr,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
            bound.push((listener, local, net.clone()));
        }
        let sys_interval = config.sys_interval;
        let custom: Vec<_> = config
            .custom
            .iter()
            .filter_map(|c| {
                let name = c
                    .options
                    .name
                    .clone()
                    .unwrap_or_else(|| Arc::clone(&c.name));
                c.slot.lock().take().map(|l| (name, l, c.options.clone()))
            })
            .collect();
        let shared = Shared::new(config);
        tracing::info!(policy = %shared.anonymous, ownership = ?shared.ownership, "access policy");
        if let Some(p) = &shared.persistence {
            let snapshot = p.load().await.map_err(Error::Storage)?;
            persist::restore(&shared, snapshot);
        }
        let mut local_addrs = Vec::with_capacity(bound.len());
        for (listener, local, net) in bound {
            let label = net.kind.label();
            let name: Arc<str> = net
                .options
                .name
                .clone()
                .unwrap_or_else(|| format!("{label}:{local}").into());
            tracing::info!(listener = %name, addr = %local, kind = label, proxy = net.options.proxy, "listening");
            local_addrs.push(local);
            shared
                .tracker
                .spawn(accept_loop(Arc::clone(&shared), listener, name, net));
        }
        for (name, listener, options) in custom {
            tracing::info!(listener = %name, proxy = options.proxy, "listening (custom)");
            shared
                .tracker
                .spawn(listener.run(Arc::clone(&shared), name, options));
        }
        if let Some(interval) = sys_interval {
            shared
                .tracker
                .spawn(sys_loop(Arc::clone(&shared), interval));
        }
        let timer_shared = Arc::clone(&shared);
        shared.tracker.spawn(async move {
            let stop = timer_shared.shutdown.clone();
            timer_shared
                .timers
                .run(&stop, |due| timer_shared.fire(due))
                .await;
        });
        Ok(BrokerHandle {
            shared,
            local_addrs,
        })
    }

    /// Starts the broker, runs it until `signal` completes, then shuts it down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), Error> {
        let handle = self.start().await?;
        signal.await;
        handle.shutdown().await;
        Ok(())
    }
}

/// A running broker. Cloning gives another handle to the same broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    pub(crate) shared: Arc<Shared>,
    local_addrs: Vec<SocketAddr>,
}

impl BrokerHandle {
    /// The addresses the TCP listeners are bound to, in the order they were added.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A snapshot of the broker's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.refresh_gauges();
        self.shared.metrics.snapshot()
    }

    /// Protocol violations that closed a connection, counted by the rule each broke (a
    /// normative statement such as `"MQTT-3.3.2-8 (v5)"`, a section, or a limit), sorted by
    /// rule. Their sum is [`MetricsSnapshot::protocol_errors`].
    pub fn protocol_errors_by_rule(&self) -> Vec<(&'static str, u64)> {
        self.shared.metrics.protocol_errors_by_rule()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Replaces the authorizers while the broker runs. New checks use them at once. With
    /// `recheck`, every connected client is checked again: a client the authorizers refuse
    /// ([`Authorizer::authorize_client`]) is disconnected (v5: DISCONNECT 0x98 Administrative
    /// action), and subscriptions no longer allowed are removed, from offline sessions too.
    /// Messages already queued for any session are checked against the new authorizers when
    /// they are sent, with or without `recheck`. Returns when the re-check is done.
    pub async fn set_authorizers(&self, authorizers: Vec<Arc<dyn Authorizer>>, recheck: bool) {
        {
            let mut chain = self.shared.authorizers.write();
            self.shared
                .open_access
                .store(authorizers.is_empty(), Ordering::Release);
            *chain = Arc::new(authorizers);
            // Queued deliveries authorized under the old rules are checked again when sent.
            // Never 0 (the epoch of deliveries restored from storage), even when it wraps.
            let _ =
                self.shared
                    .authz_epoch
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                        Some(e.checked_add(1).unwrap_or(1))
                    });
        }
        if recheck {
            self.shared.recheck_sessions().await;
        }
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Stops the broker (see the module docs) and waits until all its tasks have ended.
    /// Calling it again, or from another handle, waits for the same end.
    pub async fn shutdown(&self) {
        tracing::info!("broker shutting down");
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        if let Some(p) = &self.shared.persistence {
            p.close().await;
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, name: Arc<str>, net: NetListener) {
    let NetListener { kind, options, .. } = net;
    let listener_cap = options.cap();
    let ListenerOptions {
        proxy,
        max_packet_size,
        ..
    } = options;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (mut stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        Metrics::inc(&shared.metrics.connections_total);
        // Pending until authenticated (see `admission`). Behind the PROXY protocol every
        // socket comes from the balancer: counted under the client's address once the
        // header names it.
        let source = (!proxy).then(|| addr.ip());
        let ticket = shared.admit(source);
        let _ = stream.set_nodelay(true);
        let conn_shared = Arc::clone(&shared);
        let mut peer = PeerInfo {
            addr: Some(addr),
            listener: Arc::clone(&name),
            certificates: Vec::new(),
            max_packet_size,
            in_process: false,
            ticket: Some(ticket),
            listener_cap: listener_cap.clone(),
        };
        let kind = kind.clone();
        let task = async move {
            // Boxed, like the handshakes below: it runs once.
            if proxy && !Box::pin(proxy_header(&conn_shared, &mut stream, &mut peer)).await {
                return;
            }
            if let ListenerKind::Tcp = kind {
                let (read, write) = stream.into_split();
                let reader = NetReader::new(read, Arc::clone(&conn_shared));
                let writer = NetWriter::new(write, Arc::clone(&conn_shared));
                connection::serve(conn_shared, reader, writer, peer).await;
                return;
            }
            // Boxed: the TLS and WebSocket paths are larger futures, and a plain TCP
            // connection's task would otherwise be as large as the largest of them.
            Box::pin(serve_upgraded(conn_shared, stream, kind, peer, addr)).await;
        };
        shared.tracker.spawn(task);
    }
}

/// Runs a TLS or WebSocket handshake (under the handshake deadline), then serves the
/// connection over the upgraded stream.
async fn serve_upgraded(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    kind: ListenerKind,
    peer: PeerInfo,
    addr: std::net::SocketAddr,
) {
    let timeout = shared.limits.handshake_timeout;
    let upgraded = {
        // Scoped: the tokens are dropped before the connection is served (kept, their
        // allocations would live as long as the connection).
        let stop = shared.shutdown.clone();
        let evicted = peer.evicted();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = evicted.cancelled() => return,
            r = tokio::time::timeout(timeout, upgrade(stream, &kind, peer, shared.limits.max_packet_size)) => r,
        }
    };
    match upgraded {
        Ok(Ok(Upgraded::Tls(s, peer))) => serve_stream(shared, *s, peer).await,
        Ok(Ok(Upgraded::Ws(s, peer))) => serve_stream(shared, *s, peer).await,
        Ok(Ok(Upgraded::Wss(s, peer))) => serve_stream(shared, *s, peer).await,
        Ok(Err(e)) => match tls_failure(&e) {
            // A refused TLS handshake is what an operator setting up mTLS needs to see:
            // at info, once a minute per address (a client can retry in a loop).
            Some(reason) if shared.tls_log.allow(addr.ip()) => {
                tracing::info!(peer = %addr, %reason, "TLS handshake refused{}", tls_hint(&reason));
            }
            _ => tracing::debug!(peer = %addr, error = %e, "handshake failed"),
        },
        Err(_) => tracing::debug!(peer = %addr, "handshake timed out"),
    }
}

/// Reads the PROXY protocol header a listener requires, within the handshake timeout; the
/// client address it names becomes the peer's. False if the connection is to be dropped
/// (no valid header in time, evicted, or shutting down).
async fn proxy_header<S: tokio::io::AsyncRead + Unpin>(
    shared: &Shared,
    stream: &mut S,
    peer: &mut PeerInfo,
) -> bool {
    let timeout = shared.limits.handshake_timeout;
    // Only while the header is read: a token kept in the connection's task would keep its
    // allocation for the connection's whole life.
    let evicted = peer.evicted();
    let read = tokio::time::timeout(timeout, proxy::read_header(stream));
    let header = tokio::select! {
        _ = shared.shutdown.cancelled() => return false,
        _ = evicted.cancelled() => return false,
        r = read => r,
    };
    match header {
        Ok(Ok(Some(client))) => {
            if let Some(ticket) = &peer.ticket {
                ticket.rekey(client.ip(), &shared.limits, &shared.metrics);
            }
            peer.addr = Some(client);
            true
        }
        Ok(Ok(None)) => true,
        Ok(Err(e)) => {
            tracing::debug!(peer = ?peer.addr, error = %e, "PROXY header rejected");
            false
        }
        Err(_) => {
            tracing::debug!(peer = ?peer.addr, "PROXY header timed out");
            false
        }
    }
}

/// Serves the connections of a user-supplied listener, with the same per-listener options
/// as a network one (PROXY header, connection cap, packet size).
pub(crate) async fn custom_accept_loop<L: Listener>(
    shared: Arc<Shared>,
    mut listener: L,
    name: Arc<str>,
    options: ListenerOptions,
) {
    let listener_cap = options.cap();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        Metrics::inc(&shared.metrics.connections_total);
        // Behind the PROXY protocol, counted under the client's address once the header
        // names it (as for a network listener).
        let source = accepted.peer.filter(|_| !options.proxy).map(|a| a.ip());
        let ticket = shared.admit(source);
        let mut peer = PeerInfo {
            addr: accepted.peer,
            listener: Arc::clone(&name),
            certificates: accepted.certificates,
            max_packet_size: options.max_packet_size,
            in_process: false,
            ticket: Some(ticket),
            listener_cap: listener_cap.clone(),
        };
        let conn_shared = Arc::clone(&shared);
        let proxy = options.proxy;
        let mut stream = accepted.stream;
        shared.tracker.spawn(async move {
            if proxy && !Box::pin(proxy_header(&conn_shared, &mut stream, &mut peer)).await {
                return;
            }
            serve_stream(conn_shared, stream, peer).await;
        });
    }
}

/// What a listener accepts connections as.
/// A network listener as configured on the builder.
#[derive(Clone, Debug)]
struct NetListener {
    addr: SocketAddr,
    kind: ListenerKind,
    options: ListenerOptions,
}

/// What the per-listener setters of the builder set, for a network listener or one of
/// the application's own alike.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListenerOptions {
    /// A PROXY protocol header is required before the connection's own bytes.
    proxy: bool,
    name: Option<Arc<str>>,
    max_connections: Option<usize>,
    max_packet_size: Option<u32>,
}

impl ListenerOptions {
    /// The listener's connection cap, counted across its connections.
    fn cap(&self) -> Option<ListenerCap> {
        self.max_connections.map(|max| ListenerCap {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        })
    }
}

/// A listener of the application's own, waiting for the broker that takes it.
#[derive(Clone)]
struct CustomListener {
    name: Arc<str>,
    slot: ListenerSlot,
    /// [`Listener::local_only`].
    local_only: bool,
    options: ListenerOptions,
}

/// The listener the per-listener setters apply to: the one added last.
#[derive(Clone, Copy, Debug)]
enum LastListener {
    Net(usize),
    Custom(usize),
}

impl NetListener {
    fn new(addr: SocketAddr, kind: ListenerKind) -> Self {
        NetListener {
            addr,
            kind,
            options: ListenerOptions::default(),
        }
    }
}

#[derive(Clone)]
enum ListenerKind {
    Tcp,
    Tls(Arc<TlsConfig>),
    Ws(String),
    Wss(Arc<TlsConfig>, String),
}

impl std::fmt::Debug for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl ListenerKind {
    fn label(&self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls(_) => "tls",
            ListenerKind::Ws(_) => "ws",
            ListenerKind::Wss(..) => "wss",
        }
    }
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A connection after its handshakes.
enum Upgraded {
    Tls(Box<TlsStream>, PeerInfo),
    Ws(Box<ws::WsStream<tokio::net::TcpStream>>, PeerInfo),
    Wss(Box<ws::WsStream<TlsStream>>, PeerInfo),
}

/// The TLS error behind a failed handshake, if it was one (rather than a WebSocket or
/// I/O failure).
fn tls_failure(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>())
        .map(ToString::to_string)
}

/// What to do about a TLS refusal, where the reason alone does not say.
fn tls_hint(reason: &str) -> &'static str {
    if reason.contains("UnsupportedCertVersion") {
        // `openssl x509 -req` without `-extfile` makes X.509 v1 certificates, which
        // rustls refuses.
        ": the client certificate is X.509 v1; make a v3 one (openssl x509 -req ... -extfile \
         with extendedKeyUsage=clientAuth)"
    } else if reason.contains("UnknownIssuer") {
        ": the client certificate is not signed by the --client-ca"
    } else {
        ""
    }
}

/// The TLS handshake, recording the client's certificate chain.
async fn tls_handshake(
    stream: tokio::net::TcpStream,
    tls: &TlsConfig,
    peer: &mut PeerInfo,
) -> std::io::Result<TlsStream> {
    let s = tls.acceptor().accept(stream).await?;
    peer.certificates = s
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| {
            chain
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_ref()))
                .collect()
        })
        .unwrap_or_default();
    Ok(s)
}

async fn upgrade(
    stream: tokio::net::TcpStream,
    kind: &ListenerKind,
    mut peer: PeerInfo,
    default_max_packet: u32,
) -> std::io::Result<Upgraded> {
    let max_packet = peer.max_packet_size.unwrap_or(default_max_packet);
    Ok(match kind {
        ListenerKind::Tcp => unreachable_tcp()?,
        ListenerKind::Tls(tls) => {
            let s = tls_handshake(stream, tls, &mut peer).await?;
            Upgraded::Tls(Box::new(s), peer)
        }
        ListenerKind::Ws(path) => {
            Upgraded::Ws(Box::new(ws::accept(stream, path, max_packet).await?), peer)
        }
        ListenerKind::Wss(tls, path) => {
            let s = tls_handshake(stream, tls, &mut peer).await?;
            Upgraded::Wss(Box::new(ws::accept(s, path, max_packet).await?), peer)
        }
    })
}

/// Plain TCP needs no upgrade; callers never ask for one.
fn unreachable_tcp() -> std::io::Result<Upgraded> {
    Err(std::io::Error::other("plain TCP has no handshake"))
}

/// Serves a connection over any byte stream.
async fn serve_stream<S>(shared: Arc<Shared>, stream: S, peer: PeerInfo)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let reader = NetReader::new(read, Arc::clone(&shared));
    let writer = NetWriter::new(write, Arc::clone(&shared));
    connection::serve(shared, reader, writer, peer).await;
}

/// Publishes the counters as retained `$SYS` messages every `interval`.
async fn sys_loop(shared: Arc<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    let version = TopicName::new("$SYS/broker/version");
    if let Ok(topic) = version {
        let text = format!("roost {}", env!("CARGO_PKG_VERSION"));
        shared.publish(
            &Arc::new(Message::new(
                topic,
                Bytes::from(text),
                QoS::AtMostOnce,
                true,
            )),
            &mut Vec::new(),
            &mut Vec::new(),
        );
    }
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        shared.refresh_gauges();
        let snapshot = shared.metrics.snapshot();
        for (topic, value) in snapshot.sys_topics() {
            let Ok(topic) = TopicName::new(topic) else {
                continue;
            };
            let payload = Bytes::from(value.to_string());
            shared.publish(
                &Arc::new(Message::new(topic, payload, QoS::AtMostOnce, true)),
                &mut Vec::new(),
                &mut Vec::new(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;

    /// Issue 12 §2: reconnecting a persistent session does not pile up deadlines: the
    /// queue holds at most one per kind and session, and none while the client is back.
    #[tokio::test]
    async fn reconnects_leave_one_deadline_per_session() {
        let broker = Broker::builder()
            .sys_interval(None)
            .build()
            .start()
            .await
            .expect("starts");
        for _ in 0..50 {
            let (client, _deliveries) = broker
                .client(
                    ClientOptions::new("again")
                        .persistent(true)
                        .session_expiry(3600),
                )
                .await
                .expect("connects");
            assert_eq!(broker.shared.timers.len(), 0, "the client is back");
            client.disconnect().await.expect("disconnects");
            // The detach is done once the broker has seen the DISCONNECT.
            let mut waited = 0;
            while broker.shared.timers.len() == 0 && waited < 1000 {
                tokio::task::yield_now().await;
                waited += 1;
            }
            assert_eq!(broker.shared.timers.len(), 1, "one expiry deadline");
        }
        broker.shutdown().await;
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Issue 14 §6: the task of a plain TCP connection (what each connected client costs
    /// while idle) stays small. The handshake, the TLS/WebSocket upgrade and the close path
    /// are boxed inside it so that they do not count here; this turns "boxed to keep the
    /// task small" into something a change cannot undo unnoticed.
    #[tokio::test]
    async fn a_tcp_connection_task_stays_small() {
        let shared = Shared::new(Broker::builder());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("address"));
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (stream, addr) = accepted.expect("accepts");
        let (read, write) = stream.into_split();
        let peer = PeerInfo {
            addr: Some(addr),
            listener: Arc::from("tcp:test"),
            certificates: Vec::new(),
            max_packet_size: None,
            in_process: false,
            ticket: None,
            listener_cap: None,
        };
        let task = connection::serve(
            Arc::clone(&shared),
            NetReader::new(read, Arc::clone(&shared)),
            NetWriter::new(write, Arc::clone(&shared)),
            peer,
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= CONNECTION_TASK_BUDGET,
            "a TCP connection's task is {size} bytes, over its budget of {CONNECTION_TASK_BUDGET}: \
             box what a change added inline (reader {}, writer {}, peer {} bytes)",
            std::mem::size_of::<NetReader<tokio::net::tcp::OwnedReadHalf>>(),
            std::mem::size_of::<NetWriter<tokio::net::tcp::OwnedWriteHalf>>(),
            std::mem::size_of::<PeerInfo>(),
        );
    }

    /// Bytes a plain TCP connection's future may take: 6,216 when this test was written
    /// (the same in debug and release builds), plus a little room. Making it smaller is
    /// work for the performance issue; growing it needs a reason.
    const CONNECTION_TASK_BUDGET: usize = 6_400;
}
