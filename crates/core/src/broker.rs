//! Building and starting a broker: [`Broker::builder`], [`Broker::start`]. The running
//! broker is a [`BrokerHandle`] (module `handle`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{self, ListenerOptions, Served, Upgrade};
use crate::admission::Admission;
use crate::authz::{Policy, PolicyParts};
use crate::bridge::{BridgeConfig, BridgeState};
use crate::config::{Capabilities, Limits};
use crate::context::{Context, Lifecycle, Settings};
use crate::error::Error;
use crate::handle::BrokerHandle;
use crate::metrics::Metrics;
use crate::persist::{Durability, Journal, Persistence};
use crate::pipeline;
use crate::plugin::{
    Authenticator, Authorizer, DeliveryTransform, HookChain, Hooks, PluginSettings, PluginState,
    StateSink, TransformChain,
};
use crate::policy::{AnonymousAccess, Exposure, SessionOwnership};
use crate::recovery;
use crate::registry::{SessionRules, Sessions};
use crate::router::Router;
use crate::transport::listener::{ErasedListener, Listener};
#[cfg(feature = "tls")]
use crate::transport::tls::TlsConfig;
use roost_storage::Storage;

/// A user-supplied listener waiting for the broker that takes it.
type ListenerSlot = Arc<Mutex<Option<ErasedListener>>>;

/// Builds a [`Broker`].
#[derive(Clone)]
pub struct BrokerBuilder {
    /// Network listeners, in the order they were added.
    listeners: Vec<NetListener>,
    /// User-supplied listeners, taken by the first broker started from this builder.
    custom: Vec<CustomListener>,
    /// The listener added last, which the per-listener setters configure.
    last: Option<LastListener>,
    /// Per-listener setters called before any listener was added: `start` refuses them.
    orphan_options: Vec<&'static str>,
    limits: Limits,
    capabilities: Capabilities,
    plugins: PluginSettings,
    authenticators: Vec<Arc<dyn Authenticator>>,
    authorizers: Vec<Arc<dyn Authorizer>>,
    hooks: HookChain,
    transforms: TransformChain,
    plugin_states: Vec<PluginState>,
    storage: Option<(Arc<dyn Storage>, Durability)>,
    sys_interval: Option<Duration>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metrics_interval: Duration,
    ownership: SessionOwnership,
    anonymous: AnonymousAccess,
    bridges: Vec<BridgeConfig>,
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("listeners", &self.listeners)
            .field("limits", &self.limits)
            .field("capabilities", &self.capabilities)
            .field("authenticators", &self.authenticators.len())
            .finish_non_exhaustive()
    }
}

impl BrokerBuilder {
    /// Adds a TCP listener. Port 0 picks a free port; [`BrokerHandle::local_addrs`] tells
    /// which.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listeners.push(NetListener::new(addr, Upgrade::Plain));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    #[cfg(feature = "tls")]
    /// Adds a TLS listener (MQTT over TLS, usually port 8883). Port 0 picks a free port.
    /// The configuration can be replaced later through the same `Arc` (certificate reload).
    pub fn listen_tls(mut self, addr: SocketAddr, tls: Arc<TlsConfig>) -> Self {
        self.listeners
            .push(NetListener::new(addr, Upgrade::Tls(tls)));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    /// Adds a listener of your own (see [`Listener`]); `name` is what authenticators and logs
    /// see as the listener. A builder that is cloned shares it: only the first broker
    /// started gets it.
    pub fn listener(mut self, name: impl Into<String>, listener: impl Listener) -> Self {
        let local_only = listener.local_only();
        self.custom.push(CustomListener {
            name: Arc::from(name.into()),
            slot: Arc::new(Mutex::new(Some(ErasedListener::new(listener)))),
            local_only,
            options: ListenerOptions::default(),
        });
        self.last = Some(LastListener::Custom(self.custom.len() - 1));
        self
    }

    #[cfg(feature = "websocket")]
    /// Adds a WebSocket listener (MQTT over WebSocket, subprotocol `mqtt`, binary frames) that
    /// accepts upgrades on `path` (usually `/mqtt`).
    pub fn listen_ws(mut self, addr: SocketAddr, path: impl Into<String>) -> Self {
        self.listeners
            .push(NetListener::new(addr, Upgrade::Ws(path.into())));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    #[cfg(all(feature = "tls", feature = "websocket"))]
    /// Adds a secure WebSocket listener (WebSocket over TLS) on `path`.
    pub fn listen_wss(
        mut self,
        addr: SocketAddr,
        tls: Arc<TlsConfig>,
        path: impl Into<String>,
    ) -> Self {
        self.listeners
            .push(NetListener::new(addr, Upgrade::Wss(tls, path.into())));
        self.last = Some(LastListener::Net(self.listeners.len() - 1));
        self
    }

    /// Requires (`true`) or stops requiring a PROXY protocol header (HAProxy's, version 1 or
    /// 2) on the listener added last (network or [`listener`](Self::listener)), for a broker
    /// behind a load balancer: the client address that authenticators, hooks and logs see
    /// is then the one the balancer reports. A connection without a valid header is closed;
    /// a LOCAL or UNKNOWN header keeps the balancer's own address. The header must arrive
    /// within [`Limits::handshake_timeout`]. Called before any listener was added, it makes
    /// [`Broker::start`] fail ([`Error::ListenerOptionWithoutListener`]).
    pub fn proxy_protocol(self, required: bool) -> Self {
        self.with_last_listener("proxy_protocol", |l| l.proxy = required)
    }

    /// Names the listener added last (network or custom); authenticators
    /// ([`ConnectInfo::listener`](crate::plugin::ConnectInfo::listener)), hooks and logs see
    /// the name, so that each listener can have its own authentication rules (say, password
    /// required on the public TLS port, not on loopback). The default name is the kind and
    /// the bound address, e.g. `tcp:127.0.0.1:1883`, or the name given to
    /// [`listener`](Self::listener). Before any listener, `start` fails.
    pub fn listener_name(self, name: impl Into<String>) -> Self {
        self.with_last_listener("listener_name", |l| l.name = Some(Arc::from(name.into())))
    }

    /// Caps the open connections of the listener added last, network or custom (the
    /// broker-wide [`Limits::max_connections`] still applies). A client over the cap is
    /// refused with CONNACK 0x89 Server busy (3.1.1: 0x03) and counted in
    /// `connections_refused`. Before any listener, `start` fails.
    pub fn listener_max_connections(self, max: usize) -> Self {
        self.with_last_listener("listener_max_connections", |l| {
            l.max_connections = Some(max)
        })
    }

    /// Sets the largest packet accepted on the listener added last (network or custom), in
    /// place of [`Limits::max_packet_size`] (say, small packets on a public port, large ones
    /// on loopback). v5 clients learn it from CONNACK's Maximum Packet Size; a larger packet
    /// closes the connection (0x95 Packet too large in v5). Before any listener, `start`
    /// fails.
    pub fn listener_max_packet_size(self, max: u32) -> Self {
        self.with_last_listener("listener_max_packet_size", |l| {
            l.max_packet_size = Some(max)
        })
    }

    /// Applies a per-listener option to the listener added last (network or custom). With
    /// none added yet, [`Broker::start`] fails with [`Error::ListenerOptionWithoutListener`].
    fn with_last_listener(
        mut self,
        setter: &'static str,
        set: impl FnOnce(&mut ListenerOptions),
    ) -> Self {
        match self.last {
            Some(LastListener::Net(i)) => set(&mut self.listeners[i].options),
            Some(LastListener::Custom(i)) => set(&mut self.custom[i].options),
            None => self.orphan_options.push(setter),
        }
        self
    }

    /// Sets the resource limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets what the broker offers MQTT 5.0 clients (and enforces on every client).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Adds an authenticator; authenticators run in the order added (see
    /// [`plugin`](crate::plugin) for how their answers combine).
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticators.push(authenticator);
        self
    }

    /// Adds an authorizer; authorizers run in the order added. Without any, every client may
    /// publish and subscribe everywhere.
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizers.push(authorizer);
        self
    }

    /// Adds hooks; they run in the order added.
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks.push(hooks);
        self
    }

    /// Adds a delivery transform (see [`DeliveryTransform`]): a per-subscriber form of
    /// each message, made as it is written. Transforms run in the order added.
    pub fn delivery_transform(mut self, transform: Arc<dyn DeliveryTransform>) -> Self {
        self.transforms.push(transform);
        self
    }

    /// Keeps `state` under this broker's storage (see [`PluginState`]): when the broker
    /// starts, the state is filled with what the store holds under its name, and its
    /// changes are stored from then on. Two states of one name are refused at start.
    pub fn plugin_state(mut self, state: PluginState) -> Self {
        self.plugin_states.push(state);
        self
    }

    /// Persists retained messages and persistent sessions in `storage`, durable as
    /// `durability` says (see [`Durability`]). Without storage the broker keeps everything
    /// in memory only ("none").
    pub fn storage(mut self, storage: Arc<dyn Storage>, durability: Durability) -> Self {
        self.storage = Some((storage, durability));
        self
    }

    /// Sets the deadline and failure policy of plugin calls.
    pub fn plugin_settings(mut self, settings: PluginSettings) -> Self {
        self.plugins = settings;
        self
    }

    /// How often the `$SYS/broker/...` counters are published (retained); `None` turns them
    /// off. Default 10 s.
    pub fn sys_interval(mut self, interval: Option<Duration>) -> Self {
        self.sys_interval = interval;
        self
    }

    /// What happens when a client connects with the client identifier of a persistent
    /// session that belongs to another identity. Default [`SessionOwnership::Discard`]; see
    /// [`policy`](crate::policy).
    pub fn session_ownership(mut self, ownership: SessionOwnership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Whether clients that no authenticator vouched for may connect. Default
    /// [`AnonymousAccess::Auto`]: only on a broker with no authenticator whose listeners are
    /// all on loopback addresses (see its docs for the whole rule). In-process clients
    /// ([`BrokerHandle::client`]) of a broker without authenticators are always let in.
    pub fn allow_anonymous(mut self, access: AnonymousAccess) -> Self {
        self.anonymous = access;
        self
    }

    /// How often the broker's figures are copied to the `metrics` facade (feature
    /// `metrics`; see `metrics_export`). Default 1 s.
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Adds a bridge to another broker (any number; see [`crate::bridge`]). It connects
    /// once the broker has started and keeps reconnecting until it shuts down.
    pub fn bridge(mut self, bridge: BridgeConfig) -> Self {
        self.bridges.push(bridge);
        self
    }

    /// The services of a broker so configured, not running (for benchmarks of the core).
    pub(crate) fn into_context(self) -> Context {
        context(self)
    }

    /// The broker, not yet running.
    pub fn build(self) -> Broker {
        Broker { config: self }
    }
}

/// Plugin states write through the journal, in order with the broker's other writes.
impl StateSink for Context {
    fn store(&self, op: roost_storage::Op) -> crate::gate::Gate {
        self.journal.store_gated(vec![op])
    }
}

/// A configured broker. [`Broker::start`] runs it.
#[derive(Debug)]
pub struct Broker {
    config: BrokerBuilder,
}

impl Broker {
    /// A builder with no listeners and default limits.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            listeners: Vec::new(),
            custom: Vec::new(),
            last: None,
            orphan_options: Vec::new(),
            limits: Limits::default(),
            capabilities: Capabilities::default(),
            plugins: PluginSettings::default(),
            authenticators: Vec::new(),
            authorizers: Vec::new(),
            hooks: HookChain::default(),
            transforms: TransformChain::default(),
            plugin_states: Vec::new(),
            storage: None,
            sys_interval: Some(Duration::from_secs(10)),
            metrics_interval: Duration::from_secs(1),
            ownership: SessionOwnership::default(),
            anonymous: AnonymousAccess::default(),
            bridges: Vec::new(),
        }
    }

    /// Binds the listeners and starts serving on the current tokio runtime. A broker with no
    /// listener serves in-process clients only. Each bridge's local session and its
    /// subscriptions are made before the listeners accept, so that what the first clients
    /// publish is queued for the remote.
    ///
    /// Cancel safety: if the future is dropped before it completes, listeners bound so far
    /// are closed and nothing keeps running.
    pub async fn start(self) -> Result<BrokerHandle, Error> {
        let config = self.config;
        if let Some(setter) = config.orphan_options.first() {
            return Err(Error::ListenerOptionWithoutListener(setter));
        }
        config.limits.validate().map_err(Error::InvalidSetting)?;
        config
            .capabilities
            .validate()
            .map_err(Error::InvalidSetting)?;
        crate::bridge::check_all(&config.bridges).map_err(Error::Config)?;
        let plugin_states = config.plugin_states.clone();
        for (i, s) in plugin_states.iter().enumerate() {
            if plugin_states[..i].iter().any(|o| o.name() == s.name()) {
                return Err(Error::Config("two plugin states have one name"));
            }
        }
        let mut bound = Vec::with_capacity(config.listeners.len());
        for net in &config.listeners {
            let addr = &net.addr;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    addr: *addr,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
            bound.push((listener, local, net.clone()));
        }
        let sys_interval = config.sys_interval;
        #[cfg(feature = "metrics")]
        let metrics_interval = config.metrics_interval;
        let bridges = config.bridges.clone();
        let custom: Vec<_> = config
            .custom
            .iter()
            .filter_map(|c| {
                let name = c
                    .options
                    .name
                    .clone()
                    .unwrap_or_else(|| Arc::clone(&c.name));
                c.slot.lock().take().map(|listener| Served {
                    listener,
                    name,
                    options: c.options.clone(),
                    upgrade: Upgrade::Plain,
                })
            })
            .collect();
        let ctx = Arc::new(context(config));
        tracing::info!(policy = %ctx.policy.anonymous, ownership = ?ctx.policy.ownership, "access policy");
        if let Some(p) = ctx.journal.persistence() {
            let mut snapshot = p.load().await.map_err(Error::Storage)?;
            let mut entries = std::mem::take(&mut snapshot.plugin_state);
            let ids_unsure = crate::persist::take_ids_unsure(&mut entries);
            recovery::restore(&ctx, snapshot, ids_unsure);
            p.mark_ids_unsure().await.map_err(Error::Storage)?;
            let weak: std::sync::Weak<Context> = Arc::downgrade(&ctx);
            let sink: std::sync::Weak<dyn StateSink> = weak;
            for state in &plugin_states {
                state.attach(&entries, Some(sink.clone()));
            }
        } else {
            for state in &plugin_states {
                state.attach(&[], None);
            }
        }
        // Before the listeners accept (see `bridge::start`).
        let bridges: Arc<[Arc<BridgeState>]> = crate::bridge::start(&ctx, bridges).await.into();
        let mut local_addrs = Vec::with_capacity(bound.len());
        for (listener, local, net) in bound {
            let name = net
                .options
                .name
                .clone()
                .unwrap_or_else(|| accept::default_name(&net.upgrade, local));
            tracing::info!(listener = %name, addr = %local, kind = net.upgrade.label(), proxy = net.options.proxy, "listening");
            local_addrs.push(local);
            let served = Served {
                listener: accept::Tcp(listener),
                name,
                options: net.options,
                upgrade: net.upgrade,
            };
            ctx.lifecycle
                .tracker
                .spawn(accept::accept_loop(Arc::clone(&ctx), served));
        }
        for served in custom {
            tracing::info!(listener = %served.name, proxy = served.options.proxy, "listening (custom)");
            ctx.lifecycle
                .tracker
                .spawn(accept::accept_loop(Arc::clone(&ctx), served));
        }
        #[cfg(feature = "metrics")]
        ctx.lifecycle.tracker.spawn(crate::metrics_export::run(
            Arc::clone(&ctx),
            metrics_interval,
            Arc::clone(&bridges),
        ));
        if let Some(interval) = sys_interval {
            ctx.lifecycle.tracker.spawn(crate::sys::run(
                Arc::clone(&ctx),
                interval,
                Arc::clone(&bridges),
            ));
        }
        let timer_ctx = Arc::clone(&ctx);
        ctx.lifecycle.tracker.spawn(async move {
            let ctx = timer_ctx;
            let stop = ctx.lifecycle.shutdown.clone();
            ctx.sessions
                .run_deadlines(&stop, &ctx.router, &ctx.journal, |fired| {
                    pipeline::deadline_passed(&ctx, fired)
                })
                .await;
        });
        Ok(BrokerHandle::new(ctx, local_addrs, bridges))
    }

    /// Starts the broker, runs it until `signal` completes, then shuts it down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), Error> {
        let handle = self.start().await?;
        signal.await;
        handle.shutdown().await;
        Ok(())
    }
}

/// A network listener as configured on the builder.
#[derive(Clone, Debug)]
struct NetListener {
    addr: SocketAddr,
    upgrade: Upgrade,
    options: ListenerOptions,
}

/// A listener of the application's own, waiting for the broker that takes it.
#[derive(Clone)]
struct CustomListener {
    name: Arc<str>,
    slot: ListenerSlot,
    /// [`Listener::local_only`].
    local_only: bool,
    options: ListenerOptions,
}

/// The listener the per-listener setters apply to: the one added last.
#[derive(Clone, Copy, Debug)]
enum LastListener {
    Net(usize),
    Custom(usize),
}

impl NetListener {
    fn new(addr: SocketAddr, upgrade: Upgrade) -> Self {
        NetListener {
            addr,
            upgrade,
            options: ListenerOptions::default(),
        }
    }
}

/// The services of a broker configured by `config`.
fn context(config: BrokerBuilder) -> Context {
    let metrics = Arc::new(Metrics::default());
    let persistence = config.storage.map(|(storage, durability)| {
        Persistence::start(
            storage,
            durability,
            config.limits.max_storage_bytes,
            Arc::clone(&metrics),
        )
    });
    let exposure = Exposure {
        authenticators: !config.authenticators.is_empty(),
        non_loopback_listener: config.listeners.iter().any(|l| !l.addr.ip().is_loopback()),
        proxy_protocol: config.listeners.iter().any(|l| l.options.proxy)
            || config.custom.iter().any(|l| l.options.proxy),
        client_certificates: config
            .listeners
            .iter()
            .any(|l| l.upgrade.asks_client_certificates()),
        custom_listener: config.custom.iter().any(|l| !l.local_only),
    };
    let anonymous = config.anonymous.decide(exposure);
    let policy = Policy::new(
        PolicyParts {
            plugins: config.plugins,
            authenticators: config.authenticators,
            authorizers: config.authorizers,
            hooks: config.hooks.with_own_events(),
            transforms: config.transforms,
            ownership: config.ownership,
            anonymous,
        },
        Arc::clone(&metrics),
    );
    let sessions = Sessions::new(
        SessionRules {
            max_sessions: config.limits.max_sessions,
            ownership: config.ownership,
            identities_checked: policy.identities_checked(),
        },
        Arc::clone(&metrics),
    );
    Context {
        lifecycle: Lifecycle {
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            admission: Admission::new(config.limits.max_connections, Arc::clone(&metrics)),
            tls_log: Default::default(),
        },
        live: parking_lot::RwLock::new(Arc::new(Settings {
            limits: config.limits.clone(),
            capabilities: config.capabilities.clone(),
        })),
        settings: Settings {
            limits: config.limits,
            capabilities: config.capabilities,
        },
        policy,
        sessions,
        router: Router::default(),
        journal: Journal::new(persistence),
        metrics,
    }
}
