//! The [`Hooks`] trait: observe lifecycle and message events, and change or drop messages
//! before they are routed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use super::ClientInfo;
use crate::codec::{PublishProperties, QoS, ReasonCode};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::topic::{TopicFilter, TopicName};

/// A message on its way into the router, as [`Hooks::message_published`] may change it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedMessage {
    /// Topic Name.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// v5 properties.
    pub properties: PublishProperties,
    /// A will being published. Its payload went through [`Hooks::will_received`] when its
    /// client connected, and is seen here as that hook left it.
    pub will: bool,
}

impl PublishedMessage {
    /// A message as a client publishes it (not a will), with no properties (for a
    /// plugin's own tests; the broker builds the real ones).
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: PublishProperties::default(),
            will: false,
        }
    }
}

/// What a publish hook wants done with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Route it (as possibly changed).
    Continue,
    /// Drop it: not routed, not retained. The publisher's acknowledgement is sent as usual.
    Drop,
    /// Refuse it: not routed, not retained, counted (`messages_refused_by_hooks`). A v5
    /// publisher's PUBACK/PUBREC carries this reason code (an error code, 0x80 or above; a
    /// success code is sent as 0x80 Unspecified error); a 3.1.1 publisher, which has no
    /// refusal, is acknowledged as usual (as for an authorization refusal, MQTT-3.3.5-2).
    /// For [`Hooks::will_received`], the client is refused with this code in CONNACK
    /// (3.1.1: return code 5, not authorized).
    Refuse(ReasonCode),
}

/// Why a message did not reach a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The subscriber's queue was full.
    QueueFull,
    /// QoS 0 for an offline session.
    Offline,
    /// Its Message Expiry Interval passed first.
    Expired,
    /// Larger than the subscriber's Maximum Packet Size.
    TooLarge,
    /// An authorizer refused the delivery.
    NotAuthorized,
    /// The store was over its size budget (persistent sessions only).
    StorageFull,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client sent DISCONNECT (v5: with this reason code).
    Client(ReasonCode),
    /// The network connection failed or closed without DISCONNECT.
    Lost,
    /// No packet within 1.5 × Keep Alive.
    KeepAliveTimeout,
    /// The broker closed it with this reason code (protocol error, takeover, shutdown, ...).
    Server(ReasonCode),
}

/// Observes what happens in the broker. Every method is a no-op by default.
///
/// Hooks run inline, in the task where the event happens (the publisher's task for
/// `message_published`, the subscriber's writer for `message_delivered`, ...): they must be
/// quick and must not block; a hook that needs I/O should hand the event to a task of its
/// own. Hooks run in registration order; all of them see every event. For
/// `message_published` each hook sees the message as changed by the ones before it, and the
/// first [`HookAction::Drop`] stops the message.
///
/// A hook that panics does not take down the broker or the connection: the panic is caught,
/// counted in the metrics (`plugin_failures`), and treated as [`HookAction::Continue`].
pub trait Hooks: Send + Sync + 'static {
    /// A client connected (after CONNACK was queued).
    fn client_connected(&self, client: &ClientInfo) {
        let _ = client;
    }
    /// A client's connection ended.
    fn client_disconnected(&self, client: &ClientInfo, reason: DisconnectReason) {
        let _ = (client, reason);
    }
    /// A subscription was made (or replaced) at `granted` QoS.
    fn subscribed(&self, client: &ClientInfo, filter: &TopicFilter, granted: QoS) {
        let _ = (client, filter, granted);
    }
    /// A subscription was removed by UNSUBSCRIBE.
    fn unsubscribed(&self, client: &ClientInfo, filter: &TopicFilter) {
        let _ = (client, filter);
    }
    /// A message was published (by `client`, or by the broker itself for `None`: wills of
    /// ended sessions, `$SYS`), after authorization and before routing. May change it or
    /// drop it.
    fn message_published(
        &self,
        client: Option<&ClientInfo>,
        message: &mut PublishedMessage,
    ) -> HookAction {
        let _ = (client, message);
        HookAction::Continue
    }
    /// A client connected with a will (after authentication and the will's authorization,
    /// before CONNACK). May change the will as it is kept and later published, drop it (the
    /// client connects without one) or refuse the client ([`HookAction::Refuse`]). When the
    /// will is published, [`Hooks::message_published`] sees it again, with
    /// [`PublishedMessage::will`] set.
    fn will_received(&self, client: &ClientInfo, will: &mut PublishedMessage) -> HookAction {
        let _ = (client, will);
        HookAction::Continue
    }
    /// A message was written to a subscriber (`qos` is the delivery QoS).
    fn message_delivered(&self, client_id: &str, message: &Message, qos: QoS) {
        let _ = (client_id, message, qos);
    }
    /// A subscriber completed a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) delivery.
    fn message_acknowledged(&self, client_id: &str, message: &Message) {
        let _ = (client_id, message);
    }
    /// A message did not reach a subscriber.
    fn message_dropped(&self, client_id: &str, message: &Message, reason: DropReason) {
        let _ = (client_id, message, reason);
    }
    /// A new session was created.
    fn session_created(&self, client_id: &str) {
        let _ = client_id;
    }
    /// A client resumed its existing session.
    fn session_resumed(&self, client_id: &str) {
        let _ = client_id;
    }
    /// A session expired while its client was away.
    fn session_expired(&self, client_id: &str) {
        let _ = client_id;
    }
    /// A retained message was stored (new or replacing).
    fn retained_set(&self, message: &Message) {
        let _ = message;
    }
    /// A retained message was cleared by an empty retained PUBLISH.
    fn retained_cleared(&self, topic: &TopicName) {
        let _ = topic;
    }
}

/// The registered hooks, called with panics caught, and the event streams
/// (`BrokerHandle::events`), which see every hook call while one is open.
#[derive(Default, Clone)]
pub(crate) struct HookChain {
    hooks: Vec<Arc<dyn Hooks>>,
    events: Arc<super::events::EventHub>,
}

impl std::fmt::Debug for HookChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookChain")
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl HookChain {
    pub(crate) fn push(&mut self, hook: Arc<dyn Hooks>) {
        self.hooks.push(hook);
    }

    /// No hook registered and no event stream open: nothing to call.
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty() && !self.events.active()
    }

    /// This chain with an event hub of its own: each broker built from one builder has its
    /// own streams.
    pub(crate) fn with_own_events(mut self) -> Self {
        self.events = Arc::default();
        self
    }

    /// The event streams' hub.
    pub(crate) fn events(&self) -> &super::events::EventHub {
        &self.events
    }

    /// Calls `f` on every hook, catching and counting panics, then on the event streams.
    pub(crate) fn each(&self, metrics: &Metrics, mut f: impl FnMut(&dyn Hooks)) {
        for hook in &self.hooks {
            if catch_unwind(AssertUnwindSafe(|| f(hook.as_ref()))).is_err() {
                Metrics::inc(&metrics.plugin_failures);
                tracing::warn!("a hook panicked; ignored");
            }
        }
        if self.events.active() {
            f(self.events.as_ref());
        }
    }

    /// Runs the publish hooks; the first `Drop` or `Refuse` stops the message.
    pub(crate) fn published(
        &self,
        metrics: &Metrics,
        client: Option<&ClientInfo>,
        message: &mut PublishedMessage,
    ) -> HookAction {
        self.until_stopped(metrics, |hook| hook.message_published(client, message))
    }

    /// Runs the will hooks; the first `Drop` or `Refuse` stops the will.
    pub(crate) fn will_received(
        &self,
        metrics: &Metrics,
        client: &ClientInfo,
        will: &mut PublishedMessage,
    ) -> HookAction {
        self.until_stopped(metrics, |hook| hook.will_received(client, will))
    }

    /// Calls `f` on each hook until one answers other than `Continue`; a panic counts as
    /// `Continue` (and as a plugin failure).
    fn until_stopped(
        &self,
        metrics: &Metrics,
        mut f: impl FnMut(&dyn Hooks) -> HookAction,
    ) -> HookAction {
        for hook in &self.hooks {
            match catch_unwind(AssertUnwindSafe(|| f(hook.as_ref()))) {
                Ok(HookAction::Continue) => {}
                Ok(stop) => return stop,
                Err(_) => {
                    Metrics::inc(&metrics.plugin_failures);
                    tracing::warn!("a hook panicked; the message goes on unchanged by it");
                }
            }
        }
        HookAction::Continue
    }
}
