//! The session registry: the one owner of the session table, the deadlines of detached
//! sessions and each session's life (attach and takeover, detach, will delay, expiry,
//! re-check, end).
//!
//! Its state is private; the broker changes it through verbs that say what happened
//! ([`Sessions::attach`], [`Sessions::detach`], [`Sessions::fire`], ...). A verb changes
//! the table, the router's subscriptions of an ended session and the journal, and returns
//! what the caller must do next that needs more than sessions: publish a will (which runs
//! the authorizers and the publish pipeline), tell the hooks. Recovery from storage uses the
//! same registry ([`Sessions::restored`]).

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::authz::Policy;
use crate::codec::{LastWill, Packet, ReasonCode};
use crate::metrics::Metrics;
use crate::persist::{self, Journal};
use crate::plugin::ClientInfo;
use crate::policy::SessionOwnership;
use crate::router::Router;
use crate::session::{CloseReason, Link, LinkSignals, PendingWill, Session};
use crate::shown::Text;
use crate::timers::{Due, TimerKind, Timers};

/// What a connection brings to [`Sessions::attach`].
pub(crate) struct AttachRequest {
    pub(crate) client_id: ByteString,
    pub(crate) clean_start: bool,
    pub(crate) expiry_interval: u32,
    pub(crate) signals: Arc<LinkSignals>,
    /// Outbound inflight window for this connection.
    pub(crate) window: usize,
    pub(crate) client: Arc<ClientInfo>,
    /// The Keep Alive in force, in seconds.
    pub(crate) keep_alive: u16,
}

/// A connection attached to its session.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    /// The link's id: [`Sessions::detach`] names it.
    pub(crate) link_id: u64,
    /// The session existed and was resumed (CONNACK Session Present).
    pub(crate) present: bool,
    /// The will of a session this attach discarded (Clean Start over a session that was
    /// still waiting out its Will Delay): to publish now.
    pub(crate) will: Option<WillDue>,
}

/// A will to publish now, as its client would publish it.
#[derive(Debug)]
pub(crate) struct WillDue {
    pub(crate) will: LastWill,
    pub(crate) client_id: ByteString,
    /// Its client's authorization context, `None` if unknown (then it is refused).
    pub(crate) client: Option<Arc<ClientInfo>>,
}

impl WillDue {
    fn of(will: LastWill, session: &Session) -> Self {
        WillDue {
            will,
            client_id: session.client_id.clone(),
            client: session.state.lock().client.clone(),
        }
    }
}

/// What a deadline did when it passed.
#[derive(Debug)]
pub(crate) enum Fired {
    /// The Will Delay Interval of a detached session passed.
    Will(WillDue),
    /// A detached session expired and ended; its will, if still pending, is due now.
    Expired {
        client_id: ByteString,
        will: Option<WillDue>,
    },
}

/// The session a connection attaches to (see [`Sessions::attach`]).
struct Claim {
    session: Arc<Session>,
    /// Resumed (Session Present).
    present: bool,
    /// The session it replaces (Clean Start), to discard.
    replaced: Option<Arc<Session>>,
}

/// The fixed rules of the registry.
#[derive(Debug, Clone)]
pub(crate) struct SessionRules {
    /// `Limits::max_sessions`.
    pub(crate) max_sessions: usize,
    /// Who may resume a session.
    pub(crate) ownership: SessionOwnership,
    /// An authenticator checks identities: a session whose owner is unknown is then resumed
    /// by nobody.
    pub(crate) identities_checked: bool,
}

/// A session in the table, found by its own client identifier: one pointer per entry, no
/// copy of the identifier beside it.
#[derive(Debug)]
struct Entry(Arc<Session>);

impl std::borrow::Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

// Hashed and compared as its identifier (`str`), as `Borrow<str>` requires.
impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        str::hash(&self.0.client_id, state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Entry {}

/// The sessions of one broker.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// SipHash with a random key, as std's maps: client identifiers are the peers' choice.
    table: Mutex<hashbrown::HashSet<Entry, std::hash::RandomState>>,
    timers: Timers,
    next_id: AtomicU64,
    client_id_prefix: String,
    /// Bytes queued across all sessions (`Limits::max_total_queued_bytes`).
    total_queued: Arc<AtomicUsize>,
    rules: SessionRules,
    metrics: Arc<Metrics>,
    /// Set by [`Sessions::close_all`]: a connection attaching from then on is closed too.
    closing: AtomicBool,
}

impl Sessions {
    /// An empty registry.
    pub(crate) fn new(rules: SessionRules, metrics: Arc<Metrics>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Sessions {
            table: Mutex::new(hashbrown::HashSet::with_hasher(Default::default())),
            timers: Timers::default(),
            next_id: AtomicU64::new(1),
            client_id_prefix: format!("roost-{:x}{:x}", std::process::id(), nanos),
            total_queued: Arc::new(AtomicUsize::new(0)),
            rules,
            metrics,
            closing: AtomicBool::new(false),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A client identifier no client has (MQTT-3.1.3-6).
    pub(crate) fn assign_client_id(&self) -> ByteString {
        format!("{}-{}", self.client_id_prefix, self.next_id()).into()
    }

    /// Bytes queued across all sessions now.
    pub(crate) fn total_queued(&self) -> usize {
        self.total_queued.load(Ordering::Relaxed)
    }

    /// Deadlines armed now.
    #[cfg(test)]
    pub(crate) fn deadlines(&self) -> usize {
        self.timers.len()
    }

    /// The session of `client_id`, if there is one.
    pub(crate) fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.table.lock().get(client_id).map(|e| Arc::clone(&e.0))
    }

    /// Messages queued across all sessions (a walk over every session: for the periodic
    /// metrics, not the message path).
    #[cfg(feature = "metrics")]
    pub(crate) fn total_queued_messages(&self) -> usize {
        let sessions = self.all();
        sessions.iter().map(|s| s.state.lock().queue.len()).sum()
    }

    /// Up to `limit` sessions whose client identifiers come after `after`, in order.
    pub(crate) fn page(&self, after: Option<&str>, limit: usize) -> Vec<Arc<Session>> {
        let table = self.table.lock();
        let mut page: Vec<&Arc<Session>> = table
            .iter()
            .map(|e| &e.0)
            .filter(|s| after.is_none_or(|a| &*s.client_id > a))
            .collect();
        let by_id = |a: &&Arc<Session>, b: &&Arc<Session>| a.client_id.cmp(&b.client_id);
        if page.len() > limit {
            page.select_nth_unstable_by(limit, by_id);
            page.truncate(limit);
        }
        page.sort_unstable_by(by_id);
        page.into_iter().map(Arc::clone).collect()
    }

    /// True if a session still owes its client a sweep of packet ids (see
    /// `session::inflight::Sweep`).
    pub(crate) fn sweeps_owed(&self) -> bool {
        self.all()
            .iter()
            .any(|s| s.state.lock().inflight.sweeping())
    }

    /// Every session (taken out of the table's lock).
    fn all(&self) -> Vec<Arc<Session>> {
        self.table.lock().iter().map(|e| Arc::clone(&e.0)).collect()
    }

    /// Ends the session of `client_id` now (the control API): its pending will, and the
    /// signals of the connection attached to it, which the caller closes.
    pub(crate) fn discard_now(
        &self,
        client_id: &str,
        router: &Router,
        journal: &Journal,
    ) -> Option<(Option<WillDue>, Option<Arc<LinkSignals>>)> {
        let session = self.get(client_id)?;
        let link = session.link_signals();
        let will = self.end(&session, router, journal);
        Some((will, link))
    }

    /// A new session, counted in the broker-wide queue total, not in the table yet.
    pub(crate) fn create(&self, client_id: ByteString, expiry_interval: u32) -> Arc<Session> {
        let s = Session::new(self.next_id(), client_id, expiry_interval);
        s.state.lock().total_queued = Arc::clone(&self.total_queued);
        s
    }

    /// True if a session whose authorization context is `owner` may be resumed by
    /// `client`: the same authenticated identity. A session whose owner is unknown
    /// (restored from a record written before owners were stored) is resumed only by an
    /// open broker, one where no authenticator checks identities.
    fn owned_by(&self, owner: Option<&ClientInfo>, client: &ClientInfo) -> bool {
        match owner {
            Some(owner) => owner.identity.username == client.identity.username,
            None => !self.rules.identities_checked,
        }
    }

    /// Attaches a new connection to the session for its client id, creating or replacing
    /// the session as Clean Start says and closing any connection that held it
    /// (MQTT-3.1.4-2). The CONNACK built by `connack(session_present)` is the link's first
    /// packet.
    ///
    /// A session that belongs to another identity is never resumed: it is discarded, or the
    /// CONNECT is refused with the returned code, as [`SessionOwnership`] says.
    pub(crate) fn attach(
        &self,
        request: AttachRequest,
        connack: impl FnOnce(bool) -> Packet,
        router: &Router,
        journal: &Journal,
    ) -> Result<Attached, ReasonCode> {
        let AttachRequest {
            client_id,
            clean_start,
            expiry_interval,
            signals,
            window,
            client,
            keep_alive,
        } = request;
        let link_id = self.next_id();
        let Claim {
            session,
            present,
            replaced,
        } = self.claim(client_id, clean_start, expiry_interval, &client)?;
        // MQTT-3.1.2-6: Clean Session 1 discards the previous session.
        let will = replaced.and_then(|old| self.discard(&old, router, journal));
        let mut st = session.state.lock();
        st.expiry_interval = expiry_interval;
        st.client = Some(client);
        // Back in time: its deadlines are void (one entry per kind and session at most).
        self.timers.cancel(&mut st.timers);
        // MQTT-3.1.3-9 (v5): back within the Will Delay Interval: no will.
        st.pending_will = None;
        st.disconnected_at_ms = None;
        let resend = present && st.inflight.len() > 0;
        st.link = Some(Link {
            id: link_id,
            signals,
            outbox: VecDeque::from([connack(present).into()]),
            pending: None,
            window: u16::try_from(window).unwrap_or(u16::MAX),
            resend,
            since_ms: persist::unix_now_ms(),
            keep_alive,
        });
        // After `close_all` (broker shutdown): either its pass sees this link, or this
        // sees its flag (both under the session lock, the flag set before the pass).
        if self.closing.load(Ordering::SeqCst) {
            if let Some(link) = &st.link {
                link.signals.close(CloseReason::Shutdown);
            }
        }
        journal.session_changed(&session.client_id, &st);
        drop(st);
        Ok(Attached {
            session,
            link_id,
            present,
            will,
        })
    }

    /// The table's part of [`Sessions::attach`]: the session to attach to, whether it is
    /// resumed, and the one it replaces. Closes the connection that held it.
    fn claim(
        &self,
        client_id: ByteString,
        clean_start: bool,
        expiry_interval: u32,
        client: &ClientInfo,
    ) -> Result<Claim, ReasonCode> {
        let mut map = self.table.lock();
        let existing = map.get(&*client_id).map(|e| Arc::clone(&e.0));
        let mut foreign = false;
        if let Some(old) = &existing {
            let st = old.state.lock();
            foreign = !self.owned_by(st.client.as_deref(), client);
            if foreign {
                let owner = st.client.as_ref().and_then(|c| c.identity.username.clone());
                let claimant = client.identity.username.as_deref();
                if self.rules.ownership == SessionOwnership::Refuse {
                    Metrics::inc(&self.metrics.sessions_ownership_refused);
                    tracing::warn!(client_id = %Text(&client_id), ?owner, ?claimant, "CONNECT refused: the session belongs to another identity");
                    return Err(ReasonCode::NotAuthorized);
                }
                Metrics::inc(&self.metrics.sessions_ownership_discarded);
                tracing::warn!(client_id = %Text(&client_id), ?owner, ?claimant, "session of another identity discarded: the new client starts a fresh one");
            }
            if let Some(link) = &st.link {
                link.signals
                    .close(CloseReason::Disconnect(ReasonCode::SessionTakenOver));
            }
        }
        match existing {
            // MQTT-3.1.2-4 / v5 §3.1.2.4: resume the existing session (only for the
            // identity it belongs to).
            Some(session) if !clean_start && !foreign => Ok(Claim {
                session,
                present: true,
                replaced: None,
            }),
            old => {
                if old.is_none() && map.len() >= self.rules.max_sessions {
                    Metrics::inc(&self.metrics.connections_refused);
                    tracing::warn!(client_id = %Text(&client_id), max = self.rules.max_sessions, "max_sessions reached: CONNECT refused");
                    return Err(ReasonCode::QuotaExceeded);
                }
                let s = self.create(client_id, expiry_interval);
                map.replace(Entry(Arc::clone(&s)));
                Metrics::inc(&self.metrics.sessions);
                Ok(Claim {
                    session: s,
                    present: false,
                    replaced: old,
                })
            }
        }
    }

    /// Detaches link `link_id` from `session` and deals with the connection's will
    /// (`will_delay` in seconds): due now, kept pending until the Will Delay Interval
    /// passes, or due when the session ends, whichever comes first (MQTT-3.1.2-8, v5).
    /// A session with Session Expiry Interval 0 ends now; a finite one is armed to expire.
    /// Returns the will to publish now, if any.
    pub(crate) fn detach(
        &self,
        session: &Arc<Session>,
        link_id: u64,
        will: Option<Box<LastWill>>,
        will_delay: u32,
        router: &Router,
        journal: &Journal,
    ) -> Option<WillDue> {
        let mut st = session.state.lock();
        if st.ended || st.link.as_ref().map(|l| l.id) != Some(link_id) {
            // Taken over: a new connection holds the session. Without a delay the will goes
            // now; with one, the new connection came back in time (MQTT-3.1.3-9), unless
            // the takeover started a new session (Clean Start), which ended this one: the
            // session's end is the will's deadline (v5 §3.1.3.2.2). (An ended session keeps
            // the link it had; it is never detached.)
            let due = will_delay == 0 || st.ended;
            drop(st);
            return will.filter(|_| due).map(|w| WillDue::of(*w, session));
        }
        st.link = None;
        st.detached_link = link_id;
        let now_ms = persist::unix_now_ms();
        st.disconnected_at_ms = NonZeroU64::new(now_ms);
        let expiry = st.expiry_interval;
        let mut publish_now = None;
        match will {
            Some(w) if will_delay > 0 && expiry > 0 => {
                let delay = Duration::from_secs(u64::from(will_delay.min(expiry)));
                st.pending_will = Some(Box::new(PendingWill {
                    will: *w,
                    at_ms: now_ms + delay.as_millis() as u64,
                }));
                let at = Instant::now() + delay;
                self.timers
                    .schedule(&mut st.timers, at, session, link_id, TimerKind::WillDelay);
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
        journal.session_changed(&session.client_id, &st);
        drop(st);
        let mut due = publish_now.map(|w| WillDue::of(*w, session));
        if expiry == 0 {
            // The session's end is the deadline of a pending will; `publish_now` took the
            // will already, so nothing else can be pending.
            let ended = self.end(session, router, journal);
            due = due.or(ended);
        }
        due
    }

    /// Removes `session` from the table (if it is still the one there) and discards it;
    /// returns its pending will.
    fn end(&self, session: &Arc<Session>, router: &Router, journal: &Journal) -> Option<WillDue> {
        {
            let mut map = self.table.lock();
            if map
                .get(&*session.client_id)
                .is_some_and(|e| Arc::ptr_eq(&e.0, session))
            {
                map.remove(&*session.client_id);
            }
        }
        self.discard(session, router, journal)
    }

    /// Handles a deadline of the timer queue; `None` if it was stale (the client came back,
    /// or the session ended already).
    pub(crate) fn fire(&self, due: Due, router: &Router, journal: &Journal) -> Option<Fired> {
        let session = due.session.upgrade()?;
        let mut st = session.state.lock();
        if st.ended || st.link.is_some() || st.detached_link != due.link_id {
            return None;
        }
        match due.kind {
            TimerKind::WillDelay => {
                let will = st.pending_will.take().map(|p| p.will);
                journal.session_changed(&session.client_id, &st);
                drop(st);
                will.map(|w| Fired::Will(WillDue::of(w, &session)))
            }
            TimerKind::SessionExpiry => {
                drop(st);
                tracing::debug!(client_id = %session.client_id, "session expired");
                Metrics::inc(&self.metrics.sessions_expired);
                let will = self.end(&session, router, journal);
                Some(Fired::Expired {
                    client_id: session.client_id.clone(),
                    will,
                })
            }
        }
    }

    /// Fires every deadline that is due at `now` (for tests, which cannot wait).
    #[cfg(test)]
    pub(crate) fn fire_due(&self, now: Instant, router: &Router, journal: &Journal) -> Vec<Fired> {
        self.timers
            .take_due(now)
            .into_iter()
            .filter_map(|due| self.fire(due, router, journal))
            .collect()
    }

    /// Broker shutdown: asks every attached connection to close, and every one that
    /// attaches from now on (a connection's close signal is its own, not a child of the
    /// shutdown token: see `LinkSignals`).
    pub(crate) fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let reason = CloseReason::Shutdown;
        let sessions = self.all();
        for session in sessions {
            if let Some(link) = &session.state.lock().link {
                link.signals.close(reason);
            }
        }
    }

    /// Fires deadlines as they pass, until `stop`; `then` gets what each did.
    pub(crate) async fn run_deadlines(
        &self,
        stop: &CancellationToken,
        router: &Router,
        journal: &Journal,
        mut then: impl FnMut(Fired),
    ) {
        self.timers
            .run(stop, |due| {
                if let Some(fired) = self.fire(due, router, journal) {
                    then(fired);
                }
            })
            .await;
    }

    /// Ends a session: drops its queue, removes its subscriptions, and returns a will still
    /// waiting out its delay (the session's end is the will's deadline). Idempotent.
    fn discard(&self, session: &Session, router: &Router, journal: &Journal) -> Option<WillDue> {
        let (subscriptions, will, client) = {
            let mut st = session.state.lock();
            if st.ended {
                return None;
            }
            st.ended = true;
            st.queue.clear();
            st.queued_bytes = 0;
            st.release_total();
            st.retained_backlog = None;
            st.retained_waiting = 0;
            self.timers.cancel(&mut st.timers);
            (
                st.take_subscriptions(),
                st.pending_will.take(),
                st.client.clone(),
            )
        };
        journal.session_ended(&session.client_id);
        for filter in subscriptions.keys() {
            if router.unsubscribe(session, filter) {
                Metrics::dec(&self.metrics.subscriptions);
            }
        }
        Metrics::dec(&self.metrics.sessions);
        will.map(|w| WillDue {
            will: w.will,
            client_id: session.client_id.clone(),
            client,
        })
    }

    /// Adds a session rebuilt from storage, with its deadlines: the will delay ending at
    /// `will_at` and the expiry at `expires_at`, when it has them.
    pub(crate) fn restored(
        &self,
        session: Arc<Session>,
        will_at: Option<Instant>,
        expires_at: Option<Instant>,
    ) {
        {
            let mut st = session.state.lock();
            if let Some(at) = will_at {
                self.timers
                    .schedule(&mut st.timers, at, &session, 0, TimerKind::WillDelay);
            }
            if let Some(at) = expires_at {
                self.timers
                    .schedule(&mut st.timers, at, &session, 0, TimerKind::SessionExpiry);
            }
        }
        self.table.lock().replace(Entry(session));
        Metrics::inc(&self.metrics.sessions);
    }

    /// Checks every session against the authorizers in force (see
    /// [`BrokerHandle::set_authorizers`](crate::BrokerHandle::set_authorizers)): connected
    /// clients may be refused outright, and subscriptions no longer allowed are removed
    /// from connected and offline sessions alike. Messages already queued are checked when
    /// they are sent (the authorizers' epoch).
    pub(crate) async fn recheck(&self, policy: &Policy, router: &Router, journal: &Journal) {
        let sessions = self.all();
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
            if connected && policy.authorize_client(&client).await.is_err() {
                tracing::info!(client_id = %Text(&client.client_id), "access revoked: disconnecting");
                if let Some(link) = &session.state.lock().link {
                    link.signals
                        .close(CloseReason::Disconnect(ReasonCode::AdministrativeAction));
                }
                continue;
            }
            for (filter, qos) in filters {
                if policy
                    .authorize_subscribe(&client, &filter, qos)
                    .await
                    .is_ok()
                {
                    continue;
                }
                tracing::info!(client_id = %Text(&client.client_id), filter = %Text(filter.as_str()), "subscription revoked");
                let removed = {
                    let mut st = session.state.lock();
                    let removed = st.remove_subscription(&filter).is_some();
                    journal.session_changed(&session.client_id, &st);
                    removed
                };
                if removed && router.unsubscribe(&session, &filter) {
                    Metrics::dec(&self.metrics.subscriptions);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The session rules, without sockets: a registry, a router and a journal without
    //! storage, driven through the same verbs the connections use.

    use super::*;
    use crate::codec::{ConnAck, ProtocolVersion, QoS, WillProperties};
    use crate::plugin::Identity;
    use crate::topic::TopicName;

    struct World {
        sessions: Sessions,
        router: Router,
        journal: Journal,
        metrics: Arc<Metrics>,
    }

    fn world(rules: SessionRules) -> World {
        let metrics = Arc::new(Metrics::default());
        World {
            sessions: Sessions::new(rules, Arc::clone(&metrics)),
            router: Router::default(),
            journal: Journal::new(None),
            metrics,
        }
    }

    fn open() -> SessionRules {
        SessionRules {
            max_sessions: 10,
            ownership: SessionOwnership::Discard,
            identities_checked: false,
        }
    }

    fn client(id: &str, user: Option<&str>) -> Arc<ClientInfo> {
        Arc::new(ClientInfo {
            client_id: id.into(),
            claimed_username: None,
            identity: user.map(Identity::user).unwrap_or_default(),
            protocol: ProtocolVersion::V5,
            peer: None,
            listener: Arc::from("test"),
            internal: false,
        })
    }

    fn will() -> Box<LastWill> {
        Box::new(LastWill {
            topic: TopicName::new("last/words").expect("valid topic"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        })
    }

    impl World {
        /// Attaches a connection of `client` with these Clean Start and expiry.
        fn connect(
            &self,
            client: &Arc<ClientInfo>,
            clean_start: bool,
            expiry: u32,
        ) -> Result<(Attached, Arc<LinkSignals>), ReasonCode> {
            let signals = LinkSignals::new();
            let request = AttachRequest {
                client_id: client.client_id.clone(),
                clean_start,
                expiry_interval: expiry,
                signals: Arc::clone(&signals),
                window: 10,
                client: Arc::clone(client),
                keep_alive: 0,
            };
            let connack = |session_present| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code: ReasonCode::Success,
                    properties: Default::default(),
                })
            };
            let attached = self
                .sessions
                .attach(request, connack, &self.router, &self.journal)?;
            Ok((attached, signals))
        }

        fn detach(&self, a: &Attached, will: Option<Box<LastWill>>, delay: u32) -> Option<WillDue> {
            self.sessions.detach(
                &a.session,
                a.link_id,
                will,
                delay,
                &self.router,
                &self.journal,
            )
        }

        fn fire_after(&self, secs: u64) -> Vec<Fired> {
            let now = Instant::now() + Duration::from_secs(secs);
            self.sessions.fire_due(now, &self.router, &self.journal)
        }
    }

    /// MQTT-3.1.4-2: a second connection with the same client id takes the session over and
    /// the first is closed (v5: 0x8E Session taken over); MQTT-3.2.2-2 / -3 (v5 §3.2.2.1.1):
    /// Session Present says whether the session was resumed.
    #[test]
    fn takeover_closes_the_old_link_and_resumes_the_session() {
        let w = world(open());
        let c = client("c", None);
        let (first, first_signals) = w.connect(&c, false, 60).expect("attaches");
        assert!(!first.present, "a new session");
        let (second, _) = w.connect(&c, false, 60).expect("attaches");
        assert!(second.present, "the same session, resumed");
        assert!(Arc::ptr_eq(&first.session, &second.session));
        assert!(first_signals.is_closed(), "the old link is closed");
        assert_eq!(
            first_signals.reason(),
            CloseReason::Disconnect(ReasonCode::SessionTakenOver)
        );
        // The old connection's detach finds its link gone and leaves the session alone.
        assert!(w.detach(&first, None, 0).is_none());
        assert!(second.session.state.lock().link.is_some());
    }

    /// Shutdown closes the connections attached before it and every one attaching after
    /// it (a link's close signal is its own, not a child of the shutdown token).
    #[test]
    fn close_all_closes_attached_links_and_later_ones() {
        let w = world(open());
        let (_, before) = w.connect(&client("a", None), true, 0).expect("attaches");
        assert!(!before.is_closed());
        w.sessions.close_all();
        assert!(before.is_closed(), "an attached link is closed");
        assert_eq!(before.reason(), CloseReason::Shutdown);
        let (_, after) = w.connect(&client("b", None), true, 0).expect("attaches");
        assert!(
            after.is_closed(),
            "a link attached afterwards is closed at once"
        );
        assert_eq!(after.reason(), CloseReason::Shutdown);
    }

    /// MQTT-3.1.2-4 / -6 (3.1.1: Clean Session 1 discards the previous session): Clean
    /// Start makes a new session; the old one ends and its subscriptions are gone.
    #[test]
    fn clean_start_discards_the_previous_session() {
        let w = world(open());
        let c = client("c", None);
        let (first, _) = w.connect(&c, false, 60).expect("attaches");
        let (second, _) = w.connect(&c, true, 60).expect("attaches");
        assert!(!second.present);
        assert!(!Arc::ptr_eq(&first.session, &second.session));
        assert!(first.session.state.lock().ended, "the old session ended");
        assert_eq!(w.metrics.snapshot().sessions, 1);
    }

    /// A session belongs to the identity that made it: another identity never resumes it
    /// (discarded or refused, as `SessionOwnership` says).
    #[test]
    fn another_identity_never_resumes_a_session() {
        let mut rules = open();
        rules.identities_checked = true;
        let w = world(rules.clone());
        let (first, _) = w
            .connect(&client("c", Some("alice")), false, 60)
            .expect("attaches");
        let (second, _) = w
            .connect(&client("c", Some("mallory")), false, 60)
            .expect("attaches");
        assert!(!second.present, "mallory gets a fresh session");
        assert!(first.session.state.lock().ended);

        rules.ownership = SessionOwnership::Refuse;
        let w = world(rules);
        w.connect(&client("c", Some("alice")), false, 60)
            .expect("attaches");
        let refused = w.connect(&client("c", Some("mallory")), false, 60);
        assert_eq!(refused.err(), Some(ReasonCode::NotAuthorized));
    }

    /// `Limits::max_sessions`: a new session over the limit is refused (0x97), a resumed
    /// one is not.
    #[test]
    fn max_sessions_refuses_new_sessions_only() {
        let mut rules = open();
        rules.max_sessions = 1;
        let w = world(rules);
        let a = client("a", None);
        w.connect(&a, false, 60).expect("attaches");
        let refused = w.connect(&client("b", None), false, 60);
        assert_eq!(refused.err(), Some(ReasonCode::QuotaExceeded));
        assert!(w.connect(&a, false, 60).expect("resumes").0.present);
    }

    /// MQTT-3.1.2-8 with v5 §3.1.3.2.2: the will waits out its Will Delay Interval, then is
    /// due; the session expires at its Session Expiry Interval.
    #[test]
    fn will_delay_then_expiry() {
        let w = world(open());
        let c = client("c", None);
        let (a, _) = w.connect(&c, false, 10).expect("attaches");
        assert!(w.detach(&a, Some(will()), 5).is_none(), "not yet");
        assert_eq!(w.sessions.deadlines(), 2, "will delay and expiry armed");
        assert!(w.fire_after(4).is_empty(), "nothing due before the delay");
        let fired = w.fire_after(6);
        assert!(
            matches!(&fired[..], [Fired::Will(due)] if due.client_id == "c" && due.client.is_some()),
            "the will is due after its delay, as its client: {fired:?}"
        );
        let fired = w.fire_after(11);
        assert!(
            matches!(&fired[..], [Fired::Expired { client_id, will: None }] if client_id == "c"),
            "then the session expires: {fired:?}"
        );
        assert!(w.sessions.get("c").is_none(), "and leaves the table");
        assert_eq!(w.sessions.deadlines(), 0);
    }

    /// MQTT-3.1.3-9 (v5): a client back within the Will Delay Interval cancels the will;
    /// its deadlines are void.
    #[test]
    fn back_within_the_will_delay_no_will() {
        let w = world(open());
        let c = client("c", None);
        let (a, _) = w.connect(&c, false, 60).expect("attaches");
        assert!(w.detach(&a, Some(will()), 30).is_none());
        let (b, _) = w.connect(&c, false, 60).expect("resumes");
        assert!(b.present);
        assert_eq!(w.sessions.deadlines(), 0, "the client is back: no deadline");
        assert!(w.fire_after(120).is_empty(), "no will, no expiry");
        assert!(b.session.state.lock().pending_will.is_none());
    }

    /// v5 §3.1.3.2.2: the will goes when the session ends, if that is before the delay
    /// ends; a session with expiry 0 ends at once.
    #[test]
    fn a_session_ending_first_publishes_the_will() {
        let w = world(open());
        let c = client("c", None);
        // The Will Delay is capped at the Session Expiry Interval.
        let (a, _) = w.connect(&c, false, 5).expect("attaches");
        assert!(w.detach(&a, Some(will()), 60).is_none());
        let fired = w.fire_after(6);
        let wills = fired
            .iter()
            .filter(|f| matches!(f, Fired::Will(_) | Fired::Expired { will: Some(_), .. }))
            .count();
        assert_eq!(
            wills, 1,
            "the will goes once, by the session's end: {fired:?}"
        );
        assert!(fired.iter().any(|f| matches!(f, Fired::Expired { .. })));
        // Expiry 0: the session ends with its connection, and the will is due now.
        let (b, _) = w.connect(&client("d", None), false, 0).expect("attaches");
        let due = w.detach(&b, Some(will()), 0).expect("the will is due now");
        assert_eq!(due.client_id, "d");
        assert!(w.sessions.get("d").is_none());
        assert!(b.session.state.lock().ended);
    }

    /// Taken over while the old connection had a will: without a delay the will goes
    /// (MQTT-3.1.2-8: not a normal DISCONNECT); with one, the new connection came back in
    /// time, unless it started a new session.
    #[test]
    fn a_will_on_takeover() {
        let w = world(open());
        let c = client("c", None);
        let (a, _) = w.connect(&c, false, 60).expect("attaches");
        w.connect(&c, false, 60).expect("takes over");
        assert!(w.detach(&a, Some(will()), 0).is_some(), "no delay: due now");

        let (a, _) = w.connect(&c, false, 60).expect("takes over");
        w.connect(&c, false, 60).expect("takes over, resuming");
        assert!(w.detach(&a, Some(will()), 10).is_none(), "back in time");

        let (a, _) = w.connect(&c, false, 60).expect("takes over");
        w.connect(&c, true, 60)
            .expect("takes over with a new session");
        assert!(
            w.detach(&a, Some(will()), 10).is_some(),
            "the old session ended"
        );
    }
}
