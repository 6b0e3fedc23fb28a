//! Plugin traits: how an application decides who connects ([`Authenticator`]), who may
//! publish, subscribe and receive where ([`Authorizer`]), and how it observes and changes
//! messages ([`Hooks`]) and how each subscriber receives them ([`DeliveryTransform`]);
//! what a plugin keeps across restarts goes in a [`PluginState`].
//!
//! # Composition
//! Plugins are object-safe `async_trait`s registered on the builder as `Arc<dyn _>` and run
//! in registration order. Each answers with a value, never a bool: allow, deny with a reason
//! code, or defer to the next plugin. The first answer that is not a deferral wins. When
//! every plugin defers, the broker's default applies: a broker with no authenticator
//! (authorizer) registered lets clients in (allows everything) — an explicit choice of the
//! embedding application; a broker with at least one refuses what none of them accepted.
//! Hooks are observers and all run; see [`Hooks`].
//!
//! # Failure
//! Every async plugin call has a deadline ([`PluginSettings::timeout`]). A call that runs
//! past it, or panics, counts as a denial (fail closed): the client gets Not authorized
//! (0x87; 3.1.1 return code 5, or the 3.1.1 equivalent for the packet) and the failure is
//! counted in the metrics (`plugin_failures`). Synchronous calls (receive checks, hooks)
//! have their panics caught the same way. A plugin cannot take the broker down.

mod auth;
mod authorize;
pub mod events;
mod guard;
mod hooks;
mod state;
mod transform;

use std::sync::Arc;
use std::time::Duration;

pub use auth::{AuthExchange, AuthOutcome, Authenticator, ConnectInfo, Identity};
pub use authorize::{Authorizer, ClientInfo, Decision, SubscribeDecision};
pub(crate) use guard::guarded;
pub(crate) use hooks::HookChain;
pub use hooks::{DisconnectReason, DropReason, HookAction, Hooks, PublishedMessage};
pub(crate) use state::{collecting as collecting_state_writes, StateSink};
pub use state::{PluginState, PluginStateError};
pub(crate) use transform::TransformChain;
pub use transform::{DeliveryTransform, Transformed};

/// Settings that apply to every plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginSettings {
    /// How long one plugin call may take before it counts as a denial. Default 5 s.
    pub timeout: Duration,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
        }
    }
}

impl PluginSettings {
    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The authorizers in force, replaceable while the broker runs.
pub(crate) type AuthorizerChain = Arc<Vec<Arc<dyn Authorizer>>>;
