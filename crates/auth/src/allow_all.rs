//! Allowing without checking: an explicit choice.

use async_trait::async_trait;
use roost_core::codec::QoS;
use roost_core::plugin::{
    AuthOutcome, Authenticator, Authorizer, ClientInfo, ConnectInfo, Decision, Identity,
    SubscribeDecision,
};
use roost_core::topic::{TopicFilter, TopicName};

/// Lets every client in and allows every publish, subscription and delivery.
///
/// As an [`Authenticator`] it can be limited to clients without a user name
/// ([`AllowAll::anonymous_only`]), deferring for the others, so that "anonymous allowed"
/// can sit beside a password table.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll {
    anonymous_only: bool,
}

impl AllowAll {
    /// Allows everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows clients that send no user name; defers for the others.
    pub fn anonymous_only() -> Self {
        Self {
            anonymous_only: true,
        }
    }
}

#[async_trait]
impl Authenticator for AllowAll {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        match &client.username {
            Some(_) if self.anonymous_only => AuthOutcome::Defer,
            Some(user) => AuthOutcome::Allow(Identity::user(user.to_string()), None),
            None => AuthOutcome::Allow(Identity::default(), None),
        }
    }
}

#[async_trait]
impl Authorizer for AllowAll {
    async fn authorize_publish(&self, _: &ClientInfo, _: &TopicName, _: QoS, _: bool) -> Decision {
        Decision::Allow
    }

    async fn authorize_subscribe(
        &self,
        _: &ClientInfo,
        _: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        SubscribeDecision::Allow(qos)
    }

    fn authorize_receive(&self, _: &ClientInfo, _: &TopicName, _: QoS) -> Decision {
        Decision::Allow
    }

    async fn authorize_client(&self, _: &ClientInfo) -> Decision {
        Decision::Allow
    }
}
