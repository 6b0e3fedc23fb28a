//! Plugin traits: how an application decides who connects (and, with later work, who may
//! publish and subscribe where, and how it observes messages).
//!
//! # Composition
//! Plugins are object-safe `async_trait`s registered on the builder as `Arc<dyn _>` and run
//! in registration order. Each answers with a value, never a bool: allow, deny with a reason
//! code, or defer to the next plugin. The first answer that is not a deferral wins. When
//! every plugin defers, the broker's default applies: a broker with no authenticator
//! registered lets clients in (an explicit choice of the embedding application); a broker
//! with at least one authenticator refuses a client none of them accepted.
//!
//! # Failure
//! Every plugin call has a deadline ([`PluginSettings::timeout`]). A call that runs past it,
//! or panics, counts as a denial (fail closed): the client gets Not authorized (0x87; 3.1.1
//! return code 5) and the failure is counted in the metrics (`plugin_failures`). A plugin
//! cannot take the broker down.

mod auth;
mod guard;

use std::time::Duration;

pub use auth::{AuthExchange, AuthOutcome, Authenticator, ConnectInfo, Identity};
pub(crate) use guard::guarded;

/// Settings that apply to every plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
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
