//! The running broker: [`BrokerHandle`], what an application keeps to watch, reconfigure,
//! connect to (in-process clients, module `client`) and stop a broker.
//!
//! A broker runs on the caller's tokio runtime: it spawns its tasks with `tokio::spawn`
//! (tracked, so shutdown can wait for them), installs no logger, signal handler or thread
//! pool, and keeps no global state, so several brokers can live in one process.
//!
//! # Shutdown
//! [`BrokerHandle::shutdown`] cancels one token. Listeners stop accepting; every connection
//! (network or in-process) stops between packets, sends v5 clients DISCONNECT 0x8B, flushes
//! what it had queued (bounded by [`Limits::close_flush_timeout`]), and ends; `shutdown`
//! returns when the last task has finished.
//!
//! Dropping the last `BrokerHandle` (clones share one) begins the same shutdown without
//! waiting for it, so a broker never outlives every way to reach it; stored state is closed
//! once its tasks have ended, if the runtime is still running then. To keep a broker
//! running with no handle (until the runtime ends), call [`BrokerHandle::detach`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::{Capabilities, InvalidSetting, Limits};
use crate::context::{Context, Settings};
use crate::metrics::MetricsSnapshot;
use crate::plugin::Authorizer;

/// What [`BrokerHandle::reconfigure`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Reconfigured {
    /// Settings that changed and are in force for connections from now on.
    pub applied: Vec<&'static str>,
    /// Broker-wide settings that changed but keep their value until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// A running broker. Cloning gives another handle to the same broker; dropping the last
/// one stops it (see the [module docs](self) and [`BrokerHandle::detach`]).
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    pub(crate) ctx: Arc<Context>,
    local_addrs: Vec<SocketAddr>,
    bridges: Arc<[Arc<crate::bridge::BridgeState>]>,
    /// Shared by the application's handles only (the broker's own tasks hold the context,
    /// not this): its drop is the last handle's.
    owner: Arc<Owner>,
}

/// What the last handle's drop does.
#[derive(Debug)]
struct Owner {
    ctx: Arc<Context>,
    /// Set by [`BrokerHandle::detach`]: the drop then leaves the broker running.
    detached: AtomicBool,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let lifecycle = &self.ctx.lifecycle;
        if self.detached.load(Ordering::Relaxed) || lifecycle.shutdown.is_cancelled() {
            return;
        }
        tracing::info!("last BrokerHandle dropped: broker shutting down");
        self.ctx.begin_shutdown();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let ctx = Arc::clone(&self.ctx);
            runtime.spawn(async move {
                ctx.lifecycle.tracker.wait().await;
                ctx.close_storage().await;
            });
        }
    }
}

impl BrokerHandle {
    /// The handle of a started broker.
    pub(crate) fn new(
        ctx: Arc<Context>,
        local_addrs: Vec<SocketAddr>,
        bridges: Arc<[Arc<crate::bridge::BridgeState>]>,
    ) -> Self {
        let owner = Arc::new(Owner {
            ctx: Arc::clone(&ctx),
            detached: AtomicBool::new(false),
        });
        BrokerHandle {
            ctx,
            local_addrs,
            bridges,
            owner,
        }
    }

    /// Lets the broker run on when the last handle is dropped, until the tokio runtime
    /// ends (or a clone made before this calls [`shutdown`](Self::shutdown)). For a
    /// broker started in the background of an application that never stops it; state is
    /// then not closed cleanly at exit (what `Durability::Acked` acknowledged is on disk
    /// regardless).
    pub fn detach(self) {
        self.owner.detached.store(true, Ordering::Relaxed);
    }

    /// The addresses the TCP listeners are bound to, in the order they were added.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A snapshot of the broker's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.ctx.refresh_gauges();
        self.ctx.metrics.snapshot()
    }

    /// The configured bridges' state and counters, in the order they were added (see
    /// [`crate::bridge`]).
    pub fn bridges(&self) -> Vec<crate::bridge::BridgeStatus> {
        self.bridges
            .iter()
            .map(|b| b.status(&self.ctx.sessions))
            .collect()
    }

    /// A stream of the broker's lifecycle events, buffering up to 1,024 (see
    /// [`crate::events`] for what happens when it is full).
    pub fn events(&self) -> crate::events::Events {
        self.events_with_capacity(1024)
    }

    /// [`BrokerHandle::events`] with a buffer of `capacity` events.
    pub fn events_with_capacity(&self, capacity: usize) -> crate::events::Events {
        self.ctx
            .policy
            .hooks
            .events()
            .open(capacity, Arc::clone(&self.ctx.metrics))
    }

    /// Protocol violations that closed a connection, counted by the rule each broke (a
    /// normative statement such as `"MQTT-3.3.2-8 (v5)"`, a section, or a limit), sorted by
    /// rule. Their sum is [`MetricsSnapshot::protocol_errors`].
    pub fn protocol_errors_by_rule(&self) -> Vec<(&'static str, u64)> {
        self.ctx.metrics.protocol_errors_by_rule()
    }

    /// The limits the broker started with (broker-wide ones stay so until a restart; see
    /// [`BrokerHandle::reconfigure`] and [`BrokerHandle::connection_settings`]).
    pub fn limits(&self) -> &Limits {
        &self.ctx.settings.limits
    }

    /// The limits and capabilities a connection starting now gets.
    pub fn connection_settings(&self) -> (Limits, Capabilities) {
        let live = self.ctx.connection_settings();
        (live.limits.clone(), live.capabilities.clone())
    }

    /// Changes the settings while the broker runs: connections accepted from now on use the
    /// new capabilities and the new [`Limits::PER_CONNECTION`] limits; open connections
    /// keep theirs (what their CONNACK advertised is what they are held to). A changed
    /// broker-wide limit (queues, retained messages, sessions, storage, connection places)
    /// is not applied and is named in [`Reconfigured::needs_restart`]. Values the broker
    /// cannot work with change nothing and are refused.
    pub fn reconfigure(
        &self,
        limits: Limits,
        capabilities: Capabilities,
    ) -> Result<Reconfigured, InvalidSetting> {
        limits.validate()?;
        capabilities.validate()?;
        let started = &self.ctx.settings;
        let mut next = Settings {
            limits,
            capabilities,
        };
        let mut needs_restart = Vec::new();
        for name in started.limits.differences(&next.limits) {
            if !Limits::PER_CONNECTION.contains(&name) {
                next.limits.copy_setting(&started.limits, name);
                needs_restart.push(name);
            }
        }
        let mut live = self.ctx.live.write();
        let mut applied = live.limits.differences(&next.limits);
        applied.extend(live.capabilities.differences(&next.capabilities));
        *live = Arc::new(next);
        if !applied.is_empty() {
            tracing::info!(settings = ?applied, "settings changed for new connections");
        }
        Ok(Reconfigured {
            applied,
            needs_restart,
        })
    }

    /// Replaces the authorizers while the broker runs. New checks use them at once. With
    /// `recheck`, every connected client is checked again: a client the authorizers refuse
    /// ([`Authorizer::authorize_client`]) is disconnected (v5: DISCONNECT 0x98 Administrative
    /// action), and subscriptions no longer allowed are removed, from offline sessions too.
    /// Messages already queued for any session are checked against the new authorizers when
    /// they are sent, with or without `recheck`. Returns when the re-check is done.
    pub async fn set_authorizers(&self, authorizers: Vec<Arc<dyn Authorizer>>, recheck: bool) {
        self.ctx.policy.set_authorizers(authorizers);
        if recheck {
            let ctx = &self.ctx;
            ctx.sessions
                .recheck(&ctx.policy, &ctx.router, &ctx.journal)
                .await;
        }
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.ctx.lifecycle.shutdown.is_cancelled()
    }

    /// Stops the broker (see the module docs) and waits until all its tasks have ended.
    /// Calling it again, or from another handle, waits for the same end.
    pub async fn shutdown(&self) {
        tracing::info!("broker shutting down");
        self.ctx.begin_shutdown();
        self.ctx.lifecycle.tracker.wait().await;
        self.ctx.policy.hooks.events().close();
        self.ctx.close_storage().await;
    }
}

#[cfg(test)]
mod tests {
    use crate::client::ClientOptions;
    use crate::codec::QoS;
    use crate::{Broker, Capabilities, Limits};

    /// A broker with no listener and no `$SYS` publishing.
    async fn quiet_broker() -> super::BrokerHandle {
        Broker::builder()
            .sys_interval(None)
            .build()
            .start()
            .await
            .expect("starts")
    }

    /// Issue 15 §8: per-connection settings change for new connections; broker-wide ones
    /// are named as needing a restart and keep their value; invalid ones change nothing.
    #[tokio::test]
    async fn reconfigure_applies_per_connection_settings_and_names_the_rest() {
        let broker = quiet_broker().await;
        let limits = Limits::default()
            .with_max_packet_size(4096)
            .with_max_sessions(7);
        let capabilities = Capabilities::default().with_maximum_qos(QoS::AtLeastOnce);
        let done = broker
            .reconfigure(limits, capabilities)
            .expect("valid settings");
        assert_eq!(done.applied, vec!["max_packet_size", "maximum_qos"]);
        assert_eq!(done.needs_restart, vec!["max_sessions"]);
        let (live, caps) = broker.connection_settings();
        assert_eq!(live.max_packet_size, 4096);
        assert_eq!(
            live.max_sessions, 100_000,
            "broker-wide: kept until a restart"
        );
        assert_eq!(caps.maximum_qos, QoS::AtLeastOnce);
        assert_eq!(broker.limits().max_packet_size, 1024 * 1024, "as started");

        let refused = broker.reconfigure(
            Limits::default().with_max_inflight(0),
            Capabilities::default(),
        );
        assert_eq!(refused.map_err(|e| e.name), Err("max_inflight"));
        assert_eq!(
            broker.connection_settings().0.max_packet_size,
            4096,
            "unchanged"
        );
        broker.shutdown().await;
    }

    #[test]
    fn every_per_connection_limit_is_a_setting() {
        for name in Limits::PER_CONNECTION {
            assert!(
                Limits::SETTINGS.iter().any(|s| s.name == *name),
                "{name} is not a Limits field"
            );
        }
    }

    /// Issue 12 §2: reconnecting a persistent session does not pile up deadlines: the
    /// queue holds at most one per kind and session, and none while the client is back.
    #[tokio::test]
    async fn reconnects_leave_one_deadline_per_session() {
        let broker = quiet_broker().await;
        for _ in 0..50 {
            let (client, _deliveries) = broker
                .client(
                    ClientOptions::new("again")
                        .persistent(true)
                        .session_expiry(3600),
                )
                .await
                .expect("connects");
            assert_eq!(broker.ctx.sessions.deadlines(), 0, "the client is back");
            client.disconnect().await.expect("disconnects");
            // The detach is done once the broker has seen the DISCONNECT.
            let mut waited = 0;
            while broker.ctx.sessions.deadlines() == 0 && waited < 1000 {
                tokio::task::yield_now().await;
                waited += 1;
            }
            assert_eq!(broker.ctx.sessions.deadlines(), 1, "one expiry deadline");
        }
        broker.shutdown().await;
    }
}
