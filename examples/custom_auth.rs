//! Writing your own authentication, authorization and hooks against Roost's plugin traits.
//!
//! ```sh
//! cargo run --example custom_auth
//! # in another terminal:
//! mosquitto_sub -p 1884 -u alice -P token-alice -t 'users/alice/#' -v &
//! mosquitto_pub -p 1884 -u alice -P token-alice -t users/alice/notes -m hi    # delivered
//! mosquitto_pub -p 1884 -u bob -P token-bob -t users/alice/notes -m sneaky    # refused
//! mosquitto_pub -p 1884 -u bob -P wrong -t x -m y                            # bad password
//! ```
//!
//! * `TokenAuth` checks a token sent as the MQTT password against a table.
//! * `PrefixAuthz` confines every user to `users/{name}/#`, and lets everyone read
//!   `public/#`.
//! * `Audit` counts published messages and stamps each with a `published-by` user
//!   property.
//!
//! The example also drives itself once with in-process clients, so running it shows each
//! decision in the log; then it serves until Ctrl-C.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use roost::codec::{QoS, ReasonCode, UserProperty};
use roost::plugin::{
    AuthOutcome, Authenticator, Authorizer, ClientInfo, ConnectInfo, Decision, HookAction, Hooks,
    Identity, PublishedMessage, SubscribeDecision,
};
use roost::topic::{covers, matches, TopicFilter, TopicName};
use roost::{Broker, ClientOptions};

/// Tokens (sent as the password) and the user each one belongs to.
struct TokenAuth {
    tokens: HashMap<&'static str, &'static str>,
}

#[async_trait]
impl Authenticator for TokenAuth {
    async fn authenticate(&self, client: &ConnectInfo) -> AuthOutcome {
        let (Some(user), Some(token)) = (&client.username, &client.password) else {
            return AuthOutcome::Deny(ReasonCode::NotAuthorized);
        };
        let token = std::str::from_utf8(token).unwrap_or("");
        match self.tokens.get(token) {
            Some(owner) if *owner == &**user => AuthOutcome::Allow(Identity::user(*owner), None),
            _ => AuthOutcome::Deny(ReasonCode::BadUserNameOrPassword),
        }
    }
}

/// Each user owns `users/{name}/#`; everyone may read `public/#`.
struct PrefixAuthz;

impl PrefixAuthz {
    fn own_prefix(client: &ClientInfo) -> Option<String> {
        let name = client.identity.username.as_deref()?;
        // A name with wildcards or separators could widen the prefix: refuse it.
        (!name.contains(['+', '#', '/'])).then(|| format!("users/{name}/#"))
    }
}

#[async_trait]
impl Authorizer for PrefixAuthz {
    async fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        _: QoS,
        _: bool,
    ) -> Decision {
        match Self::own_prefix(client) {
            Some(prefix) if matches(&prefix, topic.as_str()) => Decision::Allow,
            _ => Decision::Deny(ReasonCode::NotAuthorized),
        }
    }

    async fn authorize_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        let own = Self::own_prefix(client).is_some_and(|p| covers(&p, filter.as_str()));
        if own || covers("public/#", filter.as_str()) {
            SubscribeDecision::Allow(qos)
        } else {
            SubscribeDecision::Deny(ReasonCode::NotAuthorized)
        }
    }

    fn authorize_receive(&self, client: &ClientInfo, topic: &TopicName, _: QoS) -> Decision {
        let own = Self::own_prefix(client).is_some_and(|p| matches(&p, topic.as_str()));
        if own || matches("public/#", topic.as_str()) {
            Decision::Allow
        } else {
            Decision::Deny(ReasonCode::NotAuthorized)
        }
    }
}

/// Counts messages and stamps who published them.
#[derive(Default)]
struct Audit {
    published: AtomicU64,
}

impl Hooks for Audit {
    fn message_published(
        &self,
        client: Option<&ClientInfo>,
        message: &mut PublishedMessage,
    ) -> HookAction {
        let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(c) = client {
            let who = c
                .identity
                .username
                .clone()
                .unwrap_or_else(|| c.client_id.to_string());
            message
                .properties
                .user_properties
                .push(UserProperty::new("published-by", who));
        }
        tracing::info!(n, topic = %message.topic, "message published");
        HookAction::Continue
    }

    fn client_connected(&self, client: &ClientInfo) {
        tracing::info!(client_id = %client.client_id, user = ?client.identity.username, "connected");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let tokens = HashMap::from([("token-alice", "alice"), ("token-bob", "bob")]);
    let audit = Arc::new(Audit::default());
    let broker = Broker::builder()
        .listen("127.0.0.1:1884".parse()?)
        .authenticator(Arc::new(TokenAuth { tokens }))
        .authorizer(Arc::new(PrefixAuthz))
        .hooks(audit.clone())
        .build()
        .start()
        .await?;

    // In-process clients go through the same authentication and authorization.
    let refused = broker.client(ClientOptions::new("intruder")).await;
    println!("without a token: {:?}", refused.err());
    let (alice, mut inbox) = broker
        .client(ClientOptions::new("alice-app").credentials("alice", "token-alice"))
        .await?;
    alice.subscribe("users/alice/#", QoS::AtLeastOnce).await?;
    alice
        .publish("users/alice/notes", "hello", QoS::AtLeastOnce, false)
        .await?;
    if let Some(m) = inbox.recv().await {
        println!(
            "alice got {} {:?} {:?}",
            m.topic, m.payload, m.properties.user_properties
        );
    }
    let (bob, _) = broker
        .client(ClientOptions::new("bob-app").credentials("bob", "token-bob"))
        .await?;
    let sneaky = bob
        .publish("users/alice/notes", "sneaky", QoS::AtLeastOnce, false)
        .await;
    println!("bob publishing into alice's space: {sneaky:?}");
    let peek = bob.subscribe("users/alice/#", QoS::AtMostOnce).await;
    println!("bob subscribing to alice's space: {peek:?}");

    println!("listening on {:?}; Ctrl-C to stop", broker.local_addrs());
    tokio::signal::ctrl_c().await?;
    println!(
        "{} messages published",
        audit.published.load(Ordering::Relaxed)
    );
    broker.shutdown().await;
    Ok(())
}
