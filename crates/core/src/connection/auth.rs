//! Running the authenticator chain: plain authentication at CONNECT, and the steps of v5
//! enhanced authentication (at CONNECT and for re-authentication).

use std::any::Any;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::ReasonCode;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::plugin::{guarded, AuthExchange, AuthOutcome, ConnectInfo, Identity};
use crate::shown::{Shown, Text};

/// The answer of the chain for one step.
#[derive(Debug)]
pub(crate) enum Step {
    Allow(Identity, Option<Bytes>),
    Continue(Option<Bytes>),
    Deny(ReasonCode),
}

/// An enhanced-authentication exchange in progress (or done, kept for re-authentication).
pub(crate) struct EnhancedAuth {
    pub(crate) method: ByteString,
    /// The authenticator that took the exchange on.
    owner: Option<usize>,
    state: Option<Box<dyn Any + Send + Sync>>,
}

impl EnhancedAuth {
    pub(crate) fn new(method: ByteString) -> Self {
        Self {
            method,
            owner: None,
            state: None,
        }
    }

    /// Starts a new exchange (re-authentication) with the same method.
    pub(crate) fn restart(&mut self) {
        self.state = None;
    }
}

/// Plain authentication through the chain (see the plugin module docs for the rule), then
/// the anonymous-access policy ([`AnonymousAccess`](crate::AnonymousAccess)) for clients
/// nobody vouched for. `in_process`: a client of the embedding application.
pub(crate) async fn plain(
    ctx: &Context,
    client: &ConnectInfo,
    in_process: bool,
) -> Result<Identity, ReasonCode> {
    if ctx.policy.authenticators.is_empty() {
        if !(in_process || ctx.policy.anonymous.allowed) {
            tracing::info!(peer = %Shown(client.peer), client_id = %Text(&client.client_id), why = ctx.policy.anonymous.why, "anonymous client refused");
            return Err(ReasonCode::NotAuthorized);
        }
        // Nobody checks names: the claimed one is all there is (open broker).
        return Ok(Identity {
            username: client.username.as_ref().map(|u| u.to_string()),
            roles: Vec::new(),
        });
    }
    for authenticator in &ctx.policy.authenticators {
        match guarded(
            ctx.policy.plugins.timeout,
            authenticator.authenticate(client),
        )
        .await
        {
            Ok(AuthOutcome::Allow(identity, _)) => return Ok(identity),
            Ok(AuthOutcome::Deny(code)) => return Err(code),
            // Plain authentication has no second step.
            Ok(AuthOutcome::Continue(_)) => return Err(ReasonCode::NotAuthorized),
            Ok(AuthOutcome::Defer) => continue,
            Err(failure) => {
                Metrics::inc(&ctx.metrics.plugin_failures);
                tracing::warn!(peer = %Shown(client.peer), client_id = %Text(&client.client_id), ?failure, "authenticator failed: connection refused");
                return Err(ReasonCode::NotAuthorized);
            }
        }
    }
    if ctx.policy.anonymous.allowed && client.username.is_none() {
        return Ok(Identity::default());
    }
    // Credentials nobody accepted get the same answer as a wrong password, so the reason
    // code does not tell which user names exist.
    if client.username.is_some() {
        return Err(ReasonCode::BadUserNameOrPassword);
    }
    Err(ReasonCode::NotAuthorized)
}

/// One step of an enhanced exchange.
pub(crate) async fn enhanced(
    ctx: &Context,
    auth: &mut EnhancedAuth,
    client: &ConnectInfo,
    data: Option<Bytes>,
    reauthenticating: bool,
) -> Step {
    let candidates: Vec<usize> = match auth.owner {
        Some(i) => vec![i],
        None => (0..ctx.policy.authenticators.len()).collect(),
    };
    for i in candidates {
        let Some(authenticator) = ctx.policy.authenticators.get(i) else {
            break;
        };
        let method = auth.method.clone();
        let mut exchange = AuthExchange {
            client,
            method: &method,
            data: data.clone(),
            reauthenticating,
            state: &mut auth.state,
        };
        let answer = guarded(
            ctx.policy.plugins.timeout,
            authenticator.authenticate_enhanced(&mut exchange),
        )
        .await;
        match answer {
            Ok(AuthOutcome::Defer) => continue,
            Ok(AuthOutcome::Allow(identity, data)) => {
                auth.owner = Some(i);
                return Step::Allow(identity, data);
            }
            Ok(AuthOutcome::Continue(data)) => {
                auth.owner = Some(i);
                return Step::Continue(data);
            }
            Ok(AuthOutcome::Deny(code)) => return Step::Deny(code),
            Err(failure) => {
                Metrics::inc(&ctx.metrics.plugin_failures);
                tracing::warn!(peer = %Shown(client.peer), client_id = %Text(&client.client_id), ?failure, "authenticator failed: authentication refused");
                return Step::Deny(ReasonCode::NotAuthorized);
            }
        }
    }
    Step::Deny(ReasonCode::BadAuthenticationMethod)
}
