//! Running the authorizer chain (see the [`plugin`](crate::plugin) module docs for the
//! composition rule: first non-deferring answer wins; with authorizers registered and all
//! deferring, the answer is no; with none registered, everything is allowed).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::{QoS, ReasonCode};
use crate::metrics::Metrics;
use crate::plugin::{
    guarded, Authenticator, Authorizer, AuthorizerChain, ClientInfo, Decision, HookChain,
    PluginSettings, SubscribeDecision, TransformChain,
};
use crate::policy::{AnonymousDecision, SessionOwnership};
use crate::throttle::AuthThrottle;
use crate::topic::{TopicFilter, TopicName};

/// Who may do what: the plugins (authenticators, authorizers, hooks) and the access rules
/// decided at start. A service of the broker's context; its checks count their failures.
pub(crate) struct Policy {
    pub(crate) plugins: PluginSettings,
    pub(crate) authenticators: Vec<Arc<dyn Authenticator>>,
    authorizers: RwLock<AuthorizerChain>,
    /// No authorizer is registered (kept beside `authorizers`; read on every publish and
    /// delivery without taking the lock).
    open_access: AtomicBool,
    /// Bumped each time the authorizers are replaced. A queued delivery records the epoch
    /// it was authorized in; one from another epoch (or restored from storage, epoch 0) is
    /// checked again when it is sent.
    authz_epoch: AtomicU32,
    pub(crate) hooks: HookChain,
    /// Per-subscriber forms of deliveries.
    pub(crate) transforms: TransformChain,
    /// Who may resume a session (see [`SessionOwnership`]).
    pub(crate) ownership: SessionOwnership,
    /// Whether clients nobody vouched for may connect, decided at start.
    pub(crate) anonymous: AnonymousDecision,
    /// Back-off after failed authentication.
    pub(crate) auth_throttle: AuthThrottle,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("authenticators", &self.authenticators.len())
            .field("open_access", &self.open_access())
            .field("anonymous", &self.anonymous)
            .field("ownership", &self.ownership)
            .finish_non_exhaustive()
    }
}

/// What [`Policy::new`] is made of.
pub(crate) struct PolicyParts {
    pub(crate) plugins: PluginSettings,
    pub(crate) authenticators: Vec<Arc<dyn Authenticator>>,
    pub(crate) authorizers: Vec<Arc<dyn Authorizer>>,
    pub(crate) hooks: HookChain,
    pub(crate) transforms: TransformChain,
    pub(crate) ownership: SessionOwnership,
    pub(crate) anonymous: AnonymousDecision,
}

impl Policy {
    /// The policy a broker starts with.
    pub(crate) fn new(parts: PolicyParts, metrics: Arc<Metrics>) -> Self {
        Policy {
            plugins: parts.plugins,
            authenticators: parts.authenticators,
            open_access: AtomicBool::new(parts.authorizers.is_empty()),
            authorizers: RwLock::new(Arc::new(parts.authorizers)),
            authz_epoch: AtomicU32::new(1),
            hooks: parts.hooks,
            transforms: parts.transforms,
            ownership: parts.ownership,
            anonymous: parts.anonymous,
            auth_throttle: AuthThrottle::default(),
            metrics,
        }
    }

    /// True if no authorizer is registered (everything is allowed).
    pub(crate) fn open_access(&self) -> bool {
        self.open_access.load(Ordering::Acquire)
    }

    /// True if an authenticator checks who clients are (identities mean something).
    pub(crate) fn identities_checked(&self) -> bool {
        !self.authenticators.is_empty()
    }

    /// The authorizers' epoch (see `authz_epoch`); never 0.
    pub(crate) fn authz_epoch(&self) -> u32 {
        self.authz_epoch.load(Ordering::Acquire)
    }

    /// Replaces the authorizers; queued deliveries authorized under the old ones are
    /// checked again when sent (a new epoch, never 0, even when it wraps).
    pub(crate) fn set_authorizers(&self, authorizers: Vec<Arc<dyn Authorizer>>) {
        let mut chain = self.authorizers.write();
        self.open_access
            .store(authorizers.is_empty(), Ordering::Release);
        *chain = Arc::new(authorizers);
        let _ = self
            .authz_epoch
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(e.checked_add(1).unwrap_or(1))
            });
    }

    fn plugin_failed(&self, what: &str) {
        Metrics::inc(&self.metrics.plugin_failures);
        tracing::warn!(check = what, "authorizer failed: refused");
    }

    /// May `client` publish `topic`? `Err` carries the refusal code.
    pub(crate) async fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ReasonCode> {
        let chain = self.authorizers.read().clone();
        if chain.is_empty() || client.internal {
            return Ok(());
        }
        for a in chain.iter() {
            match guarded(
                self.plugins.timeout,
                a.authorize_publish(client, topic, qos, retain),
            )
            .await
            {
                Ok(Decision::Allow) => return Ok(()),
                Ok(Decision::Deny(code)) => return Err(code),
                Ok(Decision::Defer) => {}
                Err(_) => {
                    self.plugin_failed("publish");
                    return Err(ReasonCode::NotAuthorized);
                }
            }
        }
        Err(ReasonCode::NotAuthorized)
    }

    /// May `client` subscribe to `filter` at `qos`? `Ok` carries the QoS to grant at most.
    pub(crate) async fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> Result<QoS, ReasonCode> {
        let chain = self.authorizers.read().clone();
        if chain.is_empty() || client.internal {
            return Ok(qos);
        }
        for a in chain.iter() {
            match guarded(
                self.plugins.timeout,
                a.authorize_subscribe(client, filter, qos),
            )
            .await
            {
                Ok(SubscribeDecision::Allow(max)) => return Ok(qos.min(max)),
                Ok(SubscribeDecision::Deny(code)) => return Err(code),
                Ok(SubscribeDecision::Defer) => {}
                Err(_) => {
                    self.plugin_failed("subscribe");
                    return Err(ReasonCode::NotAuthorized);
                }
            }
        }
        Err(ReasonCode::NotAuthorized)
    }

    /// May `client` stay connected?
    pub(crate) async fn authorize_client(&self, client: &ClientInfo) -> Result<(), ReasonCode> {
        if client.internal {
            return Ok(());
        }
        let chain = self.authorizers.read().clone();
        for a in chain.iter() {
            match guarded(self.plugins.timeout, a.authorize_client(client)).await {
                Ok(Decision::Allow) => return Ok(()),
                Ok(Decision::Deny(code)) => return Err(code),
                Ok(Decision::Defer) => {}
                Err(_) => {
                    self.plugin_failed("client");
                    return Err(ReasonCode::NotAuthorized);
                }
            }
        }
        // Connecting is decided by authenticators; authorizers only revoke.
        Ok(())
    }

    /// May `client` receive a message on `topic`? Synchronous (fan-out path).
    pub(crate) fn authorize_receive(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        qos: QoS,
    ) -> bool {
        let chain = self.authorizers.read().clone();
        if chain.is_empty() || client.internal {
            return true;
        }
        for a in chain.iter() {
            match catch_unwind(AssertUnwindSafe(|| a.authorize_receive(client, topic, qos))) {
                Ok(Decision::Allow) => return true,
                Ok(Decision::Deny(_)) => return false,
                Ok(Decision::Defer) => {}
                Err(_) => {
                    self.plugin_failed("receive");
                    return false;
                }
            }
        }
        false
    }
}
