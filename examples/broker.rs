//! The example broker: a complete MQTT broker with no configuration needed.
//!
//! ```sh
//! cargo run --release --example broker                      # 127.0.0.1:1883
//! cargo run --release --example broker -- --listen 0.0.0.0:1883 --listen [::1]:1884
//! cargo run --release --example broker -- --config roost.toml
//! RUST_LOG=debug cargo run --release --example broker        # more logging
//! ```
//!
//! Flags (each also a key in the optional TOML file; flags win):
//!
//! | flag | TOML key | meaning |
//! |---|---|---|
//! | `--listen ADDR` (repeatable) | `listen = ["ADDR", ...]` | TCP listener address |
//! | `--max-connections N` | `max_connections` | open connections at most |
//! | `--max-packet-size BYTES` | `max_packet_size` | largest packet accepted |
//! | `--max-inflight N` | `max_inflight` | unacknowledged QoS 1/2 messages per session |
//! | `--max-queued N` | `max_queued` | queued messages per session |
//! | `--flow-control-queue N` | `flow_control_queue` | queue length that pauses publishers (0: off) |
//! | `--password-file FILE` | `password_file` | Mosquitto password file (`mosquitto_passwd`) |
//! | `--acl-file FILE` | `acl_file` | Mosquitto ACL file |
//! | `--allow-anonymous true\|false` | `allow_anonymous` | clients without credentials (default: see below) |
//! | `--data-dir DIR` | `data_dir` | where state is stored (default `./roost-data`) |
//! | `--durability none\|periodic\|acked` | `durability` | default `acked` |
//! | `--flush-interval-ms N` | `flush_interval_ms` | for `periodic` (default 1000) |
//! | `--on-corrupt fail\|quarantine` | `on_corrupt` | unreadable data dir (default `fail`) |
//! | `--storage redb\|sled` | `storage` | backend of a new data dir (default `redb`); an existing one opens with the backend that made it |
//! | `--max-keep-alive SECS` | `max_keep_alive` | longest Keep Alive accepted; longer (or 0) is cut and sent as Server Keep Alive (default: the client's) |
//! | `--receive-maximum N` | `receive_maximum` | unacknowledged inbound QoS 2 PUBLISHes per client (default 1,024) |
//! | `--topic-alias-maximum N` | `topic_alias_maximum` | topic aliases a client may use (default 64; 0: none) |
//! | `--outbound-topic-aliases N` | `outbound_topic_aliases` | topic aliases the broker uses towards a v5 client that accepts them (default 32; 0: none) |
//! | `--maximum-qos 0\|1\|2` | `maximum_qos` | highest QoS accepted (default 2) |
//! | `--max-session-expiry SECS` | `max_session_expiry` | longest Session Expiry Interval granted (default: no cap) |
//! | `--retain-available`, `--wildcard-subscriptions`, `--subscription-identifiers`, `--shared-subscriptions` `true\|false` | same, with `_` | v5 capabilities (default true) |
//! | `--max-storage-mb N` | `max_storage_mb` | size budget of the stored records (default none) |
//! | `--tls-listen ADDR` (repeatable) | `tls_listen = ["ADDR"]` | MQTT over TLS listener |
//! | `--cert FILE`, `--key FILE` | `cert`, `key` | server certificate chain and key (PEM) |
//! | `--client-ca FILE` | `client_ca` | require client certificates from this CA (mTLS); a certificate's CN (else SAN) is the client's login |
//! | `--ws-listen ADDR` (repeatable) | `ws_listen = ["ADDR"]` | MQTT over WebSocket |
//! | `--wss-listen ADDR` (repeatable) | `wss_listen = ["ADDR"]` | MQTT over secure WebSocket |
//! | `--ws-path PATH` | `ws_path` | WebSocket path (default `/mqtt`) |
//! | `--proxy-protocol true\|false` | `proxy_protocol` | every listener expects a PROXY header |
//! | `--threads N` | `threads` | runtime worker threads (default: one per core) |
//! | `--config FILE` | | read the TOML file |
//!
//! Anonymous clients are allowed by default only when nothing else is configured that calls
//! for credentials or lets strangers in: every listener on a loopback address, no password
//! file, no client CA, no PROXY protocol. The log says which policy is in force and why. SIGHUP reloads the password and ACL files
//! (connections stay; subscriptions the new ACL refuses are removed). It stops cleanly on
//! Ctrl-C or SIGTERM: v5 clients get DISCONNECT 0x8B.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use roost::auth::{AclFile, CertificateIdentity, CertificateName, PasswordFile};
use roost::plugin::{Authenticator, Authorizer};
use roost::storage::{open_store, Backend, OnCorrupt};
use roost::{AnonymousAccess, Durability};
use roost::{Broker, BrokerHandle, Capabilities, Limits, QoS};

#[derive(Debug, Default)]
struct Settings {
    listen: Vec<SocketAddr>,
    max_connections: Option<usize>,
    max_packet_size: Option<u32>,
    max_inflight: Option<u16>,
    max_queued: Option<usize>,
    flow_control_queue: Option<usize>,
    threads: Option<usize>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    allow_anonymous: Option<bool>,
    data_dir: Option<PathBuf>,
    durability: Option<String>,
    flush_interval_ms: Option<u64>,
    on_corrupt: Option<String>,
    backend: Option<Backend>,
    capabilities: Capabilities,
    max_storage_mb: Option<u64>,
    tls_listen: Vec<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    ws_listen: Vec<SocketAddr>,
    wss_listen: Vec<SocketAddr>,
    ws_path: Option<String>,
    proxy_protocol: bool,
}

const USAGE: &str = "usage: broker [--config FILE] [--listen ADDR]... [--max-connections N] \
[--max-packet-size BYTES] [--max-inflight N] [--max-queued N] [--flow-control-queue N] [--password-file FILE] \
[--acl-file FILE] [--allow-anonymous true|false] [--data-dir DIR] \
[--durability none|periodic|acked] [--flush-interval-ms N] [--on-corrupt fail|quarantine] [--storage redb|sled] \
[--max-keep-alive SECS] [--receive-maximum N] [--topic-alias-maximum N] [--outbound-topic-aliases N] [--maximum-qos 0|1|2] \
[--max-session-expiry SECS] [--retain-available|--wildcard-subscriptions|--subscription-identifiers|--shared-subscriptions true|false] \
[--max-storage-mb N] [--tls-listen ADDR --cert FILE --key FILE [--client-ca FILE]] \
[--ws-listen ADDR] [--wss-listen ADDR] [--ws-path PATH] [--proxy-protocol true|false] \
[--threads N]";

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: '{value}' is not true or false")),
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: '{value}' is not a valid number"))
}

fn address(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("listen: '{value}' is not an address like 127.0.0.1:1883"))
}

impl Settings {
    /// Applies `key = value` from either the TOML file or a flag.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "listen" => self.listen.push(address(value)?),
            "max_connections" => self.max_connections = Some(number(key, value)?),
            "max_packet_size" => self.max_packet_size = Some(number(key, value)?),
            "max_inflight" => self.max_inflight = Some(number(key, value)?),
            "max_queued" => self.max_queued = Some(number(key, value)?),
            "flow_control_queue" => self.flow_control_queue = Some(number(key, value)?),
            "threads" => match number(key, value)? {
                0 => return Err("threads: must be at least 1".to_string()),
                n => self.threads = Some(n),
            },
            "password_file" => self.password_file = Some(PathBuf::from(value)),
            "data_dir" => self.data_dir = Some(PathBuf::from(value)),
            "durability" => match value {
                "none" | "periodic" | "acked" => self.durability = Some(value.to_string()),
                _ => {
                    return Err(format!(
                        "durability: '{value}' is not none, periodic or acked"
                    ))
                }
            },
            "flush_interval_ms" => self.flush_interval_ms = Some(number(key, value)?),
            "max_storage_mb" => self.max_storage_mb = Some(number(key, value)?),
            "tls_listen" => self.tls_listen.push(address(value)?),
            "cert" => self.cert = Some(PathBuf::from(value)),
            "key" => self.key = Some(PathBuf::from(value)),
            "client_ca" => self.client_ca = Some(PathBuf::from(value)),
            "ws_listen" => self.ws_listen.push(address(value)?),
            "wss_listen" => self.wss_listen.push(address(value)?),
            "ws_path" => self.ws_path = Some(value.to_string()),
            "proxy_protocol" => self.proxy_protocol = boolean(key, value)?,
            "max_keep_alive" => {
                let secs: u16 = number(key, value)?;
                self.capabilities.max_keep_alive = (secs > 0).then_some(secs);
            }
            "receive_maximum" => match number(key, value)? {
                0 => return Err("receive_maximum: must be at least 1".to_string()),
                n => self.capabilities.receive_maximum = n,
            },
            "topic_alias_maximum" => self.capabilities.topic_alias_maximum = number(key, value)?,
            "outbound_topic_aliases" => {
                self.capabilities.outbound_topic_aliases = number(key, value)?
            }
            "maximum_qos" => {
                self.capabilities.maximum_qos = match value {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    "2" => QoS::ExactlyOnce,
                    _ => return Err(format!("maximum_qos: '{value}' is not 0, 1 or 2")),
                }
            }
            "max_session_expiry" => {
                self.capabilities.max_session_expiry_interval = number(key, value)?;
            }
            "retain_available" => self.capabilities.retain_available = boolean(key, value)?,
            "wildcard_subscriptions" => {
                self.capabilities.wildcard_subscriptions = boolean(key, value)?;
            }
            "subscription_identifiers" => {
                self.capabilities.subscription_identifiers = boolean(key, value)?;
            }
            "shared_subscriptions" => {
                self.capabilities.shared_subscriptions = boolean(key, value)?;
            }
            "storage" => self.backend = Some(value.parse()?),
            "on_corrupt" => match value {
                "fail" | "quarantine" => self.on_corrupt = Some(value.to_string()),
                _ => return Err(format!("on_corrupt: '{value}' is not fail or quarantine")),
            },
            "acl_file" => self.acl_file = Some(PathBuf::from(value)),
            "allow_anonymous" => self.allow_anonymous = Some(boolean(key, value)?),
            other => return Err(format!("unknown setting '{other}'")),
        }
        Ok(())
    }

    fn from_toml(text: &str) -> Result<Settings, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("config: {e}"))?;
        let mut settings = Settings::default();
        for (key, value) in &table {
            match value {
                toml::Value::Array(items) => {
                    for item in items {
                        let s = item
                            .as_str()
                            .ok_or_else(|| format!("{key}: expected strings"))?;
                        settings.set(key, s)?;
                    }
                }
                toml::Value::String(s) => settings.set(key, s)?,
                toml::Value::Integer(n) => settings.set(key, &n.to_string())?,
                toml::Value::Boolean(b) => settings.set(key, &b.to_string())?,
                _ => return Err(format!("{key}: unsupported value")),
            }
        }
        Ok(settings)
    }

    fn parse(args: impl Iterator<Item = String>) -> Result<Settings, String> {
        let args: Vec<String> = args.collect();
        // The config file comes first so that flags override it.
        let mut settings = match args.iter().position(|a| a == "--config") {
            Some(i) => {
                let path = args.get(i + 1).ok_or("--config needs a file")?;
                let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
                Settings::from_toml(&text)?
            }
            None => Settings::default(),
        };
        let mut from_flags = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_string());
            }
            let key = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument '{flag}'\n{USAGE}"))?
                .replace('-', "_");
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            if key != "config" {
                from_flags.push((key, value.clone()));
            }
        }
        if from_flags.iter().any(|(k, _)| k == "listen") {
            settings.listen.clear();
        }
        for key in ["tls_listen", "ws_listen", "wss_listen"] {
            if from_flags.iter().any(|(k, _)| k == key) {
                match key {
                    "tls_listen" => settings.tls_listen.clear(),
                    "ws_listen" => settings.ws_listen.clear(),
                    _ => settings.wss_listen.clear(),
                }
            }
        }
        for (key, value) in from_flags {
            settings.set(&key, &value)?;
        }
        if settings.listen.is_empty()
            && settings.tls_listen.is_empty()
            && settings.ws_listen.is_empty()
            && settings.wss_listen.is_empty()
        {
            settings.listen.push(address("127.0.0.1:1883")?);
        }
        let secure = !settings.tls_listen.is_empty() || !settings.wss_listen.is_empty();
        if secure && (settings.cert.is_none() || settings.key.is_none()) {
            return Err("--tls-listen and --wss-listen need --cert and --key".to_string());
        }
        Ok(settings)
    }

    fn limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(n) = self.max_connections {
            limits.max_connections = n;
        }
        if let Some(n) = self.max_packet_size {
            limits.max_packet_size = n;
        }
        if let Some(n) = self.max_inflight {
            limits.max_inflight = n;
        }
        if let Some(n) = self.max_queued {
            limits.max_queued_messages = n;
        }
        if let Some(n) = self.flow_control_queue {
            limits.flow_control_queue = n;
        }
        limits.max_storage_bytes = self.max_storage_mb.map(|mb| mb * 1024 * 1024);
        limits
    }
}

/// A store and how durable it is.
type Store = (Arc<dyn roost::storage::Storage>, Durability);

/// Opens the store the settings ask for; `None` for `--durability none`.
fn storage(settings: &Settings) -> Result<Option<Store>, String> {
    let durability = match settings.durability.as_deref().unwrap_or("acked") {
        "none" => {
            tracing::warn!("durability none: state is kept in memory only and lost on restart");
            return Ok(None);
        }
        "periodic" => {
            let ms = settings.flush_interval_ms.unwrap_or(1000);
            Durability::Periodic(std::time::Duration::from_millis(ms))
        }
        _ => Durability::Acked,
    };
    let dir = settings
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("roost-data"));
    let on_corrupt = match settings.on_corrupt.as_deref() {
        Some("quarantine") => OnCorrupt::Quarantine,
        _ => OnCorrupt::Fail,
    };
    let (backend, store) = open_store(&dir, settings.backend, on_corrupt).map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        let hint = match e {
            roost::storage::StorageError::Corrupt { .. } => {
                " (use --on-corrupt quarantine to move it aside and start empty)"
            }
            _ => "",
        };
        format!("{e}{cause}{hint}")
    })?;
    tracing::info!(dir = %dir.display(), backend = backend.name(), ?durability, "storage opened");
    Ok(Some((store, durability)))
}

/// The password and ACL files and TLS certificate in use, for SIGHUP reloads.
struct Files {
    passwords: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
    tls: Option<(Arc<roost::TlsConfig>, PathBuf, PathBuf, Option<PathBuf>)>,
}

impl Files {
    async fn reload(&self, broker: &BrokerHandle) {
        if let Some((tls, cert, key, ca)) = &self.tls {
            match tls.reload_pem_files(cert, key, ca.as_deref()) {
                Ok(()) => tracing::info!("TLS certificate reloaded (new connections)"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; previous kept")
                }
            }
        }
        if let Some(p) = &self.passwords {
            match p.reload() {
                Ok(()) => tracing::info!(users = p.len(), "password file reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "password file not reloaded; previous contents kept")
                }
            }
        }
        if let Some(a) = &self.acl {
            match a.reload() {
                Ok(()) => {
                    let authorizer: Arc<dyn Authorizer> = a.clone();
                    broker.set_authorizers(vec![authorizer], true).await;
                    tracing::info!("ACL file reloaded; live subscriptions re-checked");
                }
                Err(e) => tracing::error!(error = %e, "ACL file not reloaded; previous rules kept"),
            }
        }
    }
}

/// Builds the authentication setup the settings ask for. Anonymous access follows the
/// library's rule ([`AnonymousAccess::Auto`]) unless `--allow-anonymous` says otherwise:
/// off as soon as a password file, a client CA, the PROXY protocol or a listener off
/// loopback is configured. The broker logs the policy in force and why at start.
fn security(
    settings: &Settings,
    mut builder: roost::BrokerBuilder,
) -> Result<(roost::BrokerBuilder, Files), String> {
    let passwords = match &settings.password_file {
        Some(path) => Some(Arc::new(
            PasswordFile::load(path).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let acl = match &settings.acl_file {
        Some(path) => Some(Arc::new(AclFile::load(path).map_err(|e| e.to_string())?)),
        None => None,
    };
    if settings.client_ca.is_some() {
        // Mutual TLS: a verified client certificate is the login, named by its Common Name
        // (or Subject Alternative Name); the ACL file then applies to that name.
        tracing::info!("client certificates are logins (CN, else SAN)");
        builder = builder.authenticator(Arc::new(CertificateIdentity::new(
            CertificateName::CommonNameOrSan,
        )));
    }
    if let Some(p) = &passwords {
        tracing::info!(users = p.len(), "password file loaded");
        let p: Arc<dyn Authenticator> = p.clone();
        builder = builder.authenticator(p);
    }
    builder = builder.allow_anonymous(match settings.allow_anonymous {
        Some(true) => AnonymousAccess::Allow,
        Some(false) => AnonymousAccess::Deny,
        None => AnonymousAccess::Auto,
    });
    if let Some(a) = &acl {
        tracing::info!("ACL file loaded");
        let a: Arc<dyn Authorizer> = a.clone();
        builder = builder.authorizer(a);
    }
    Ok((
        builder,
        Files {
            passwords,
            acl,
            tls: None,
        },
    ))
}

async fn hangup(files: &Files, broker: &BrokerHandle) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return std::future::pending().await;
        };
        while hup.recv().await.is_some() {
            files.reload(broker).await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rustls warns about every client that sends an IP address as SNI
                // (mosquitto's clients do): noise at the default level.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error")),
        )
        .init();
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = settings.threads {
        runtime.worker_threads(n);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(serve(settings)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the broker `settings` describe until Ctrl-C or SIGTERM.
async fn serve(settings: Settings) -> ExitCode {
    let mut builder = Broker::builder()
        .limits(settings.limits())
        .capabilities(settings.capabilities.clone());
    for addr in &settings.listen {
        builder = builder
            .listen(*addr)
            .proxy_protocol(settings.proxy_protocol);
    }
    let mut tls = None;
    if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
        match roost::TlsConfig::from_pem_files(cert, key, settings.client_ca.as_deref()) {
            Ok(config) => tls = Some(config),
            Err(e) => {
                let cause = std::error::Error::source(&e)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                eprintln!("error: {e}{cause}");
                return ExitCode::FAILURE;
            }
        }
    }
    let ws_path = settings
        .ws_path
        .clone()
        .unwrap_or_else(|| "/mqtt".to_string());
    for addr in &settings.ws_listen {
        builder = builder
            .listen_ws(*addr, ws_path.clone())
            .proxy_protocol(settings.proxy_protocol);
    }
    if let Some(config) = &tls {
        for addr in &settings.tls_listen {
            builder = builder
                .listen_tls(*addr, Arc::clone(config))
                .proxy_protocol(settings.proxy_protocol);
        }
        for addr in &settings.wss_listen {
            builder = builder
                .listen_wss(*addr, Arc::clone(config), ws_path.clone())
                .proxy_protocol(settings.proxy_protocol);
        }
    }
    let builder = match storage(&settings) {
        Ok(Some((store, durability))) => builder.storage(store, durability),
        Ok(None) => builder,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let (builder, files) = match security(&settings, builder) {
        Ok(b) => b,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut files = files;
    if let (Some(config), Some(cert), Some(key)) = (&tls, &settings.cert, &settings.key) {
        files.tls = Some((
            Arc::clone(config),
            cert.clone(),
            key.clone(),
            settings.client_ca.clone(),
        ));
    }
    let broker = match builder.build().start().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "error: {e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listeners = ?broker.local_addrs(), "roost broker running; Ctrl-C to stop");
    tokio::select! {
        _ = stop_signal() => {}
        _ = hangup(&files, &broker) => {}
    }
    broker.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
