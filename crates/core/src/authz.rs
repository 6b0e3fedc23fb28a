//! Running the authorizer chain (see the [`plugin`](crate::plugin) module docs for the
//! composition rule: first non-deferring answer wins; with authorizers registered and all
//! deferring, the answer is no; with none registered, everything is allowed).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::broker::Shared;
use crate::codec::{QoS, ReasonCode};
use crate::metrics::Metrics;
use crate::plugin::{guarded, ClientInfo, Decision, SubscribeDecision};
use crate::topic::{TopicFilter, TopicName};

impl Shared {
    /// True if no authorizer is registered (everything is allowed).
    pub(crate) fn open_access(&self) -> bool {
        self.open_access.load(std::sync::atomic::Ordering::Acquire)
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
        if chain.is_empty() {
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
        if chain.is_empty() {
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
        if chain.is_empty() {
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
