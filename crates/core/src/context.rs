//! The broker's context: the services every task of one broker works with, each the one
//! owner of its concern. No logic lives here (each service has its own module); the context
//! only holds them, so that a connection, a listener or the timer task can borrow the ones
//! it needs.
//!
//! | service | owns | module |
//! |---|---|---|
//! | `settings` | limits and capabilities, fixed at start | `config` |
//! | `policy` | authenticators, authorizers, hooks, access rules | `authz` |
//! | `sessions` | the session table, deadlines, each session's life | `registry` |
//! | `router` | subscriptions, retained messages, fan-out | `router` |
//! | `journal` | storage: what happened in, gates out | `persist` |
//! | `metrics` | counters | `metrics` |
//! | `lifecycle` | shutdown, task tracking, connection places | `admission` |

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::authz::Policy;
use crate::config::{Capabilities, Limits};
use crate::metrics::Metrics;
use crate::persist::Journal;
use crate::registry::Sessions;
use crate::router::{Router, Services};
use crate::throttle::LogLimiter;

/// Every service of one broker.
#[derive(Debug)]
pub(crate) struct Context {
    /// The settings as started: what broker-wide code (router, sessions, admission,
    /// storage) reads.
    pub(crate) settings: Settings,
    /// The settings a new connection takes (`connection_settings`), replaced by
    /// `BrokerHandle::reconfigure`: its broker-wide fields always equal `settings`'.
    pub(crate) live: parking_lot::RwLock<Arc<Settings>>,
    pub(crate) policy: Policy,
    pub(crate) sessions: Sessions,
    pub(crate) router: Router,
    pub(crate) journal: Journal,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lifecycle: Lifecycle,
}

/// What the operator configured.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    pub(crate) capabilities: Capabilities,
}

/// The broker's life: shutdown, its tasks, and the places connections take.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Pending and authenticated connections.
    pub(crate) admission: Admission,
    /// Limits the log lines of refused TLS handshakes per client address.
    pub(crate) tls_log: LogLimiter,
}

impl Context {
    /// Starts the broker's shutdown: the token its tasks watch, every connection's close
    /// (their signals are their own, see `Sessions::close_all`), no new tasks.
    pub(crate) fn begin_shutdown(&self) {
        self.lifecycle.shutdown.cancel();
        self.sessions.close_all();
        self.lifecycle.tracker.close();
    }

    /// Writes what is pending and closes the store, once every connection has ended.
    pub(crate) async fn close_storage(&self) {
        self.journal.close(self.sessions.sweeps_owed()).await;
    }

    /// The settings for a connection starting now, kept for its whole life: what its
    /// CONNACK advertises is what it is held to.
    pub(crate) fn connection_settings(&self) -> Arc<Settings> {
        Arc::clone(&self.live.read())
    }

    /// The services routing borrows for one message.
    pub(crate) fn routing(&self) -> Services<'_> {
        Services {
            policy: &self.policy,
            metrics: &self.metrics,
            limits: &self.settings.limits,
            journal: self.journal.queue(),
        }
    }

    /// Brings the gauges that are read from elsewhere up to date.
    pub(crate) fn refresh_gauges(&self) {
        Metrics::set(
            &self.metrics.queued_bytes,
            self.sessions.total_queued() as u64,
        );
        Metrics::set(
            &self.metrics.retained_bytes,
            self.router.retained_bytes() as u64,
        );
    }
}
