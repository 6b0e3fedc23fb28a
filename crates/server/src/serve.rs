//! Running a broker from a [`Config`]: storage, authentication, listeners, and the signals
//! (Ctrl-C and SIGTERM stop it, SIGHUP reloads).

use std::process::ExitCode;
use std::sync::Arc;

use roost::auth::{AclFile, CertificateIdentity, CertificateName, PasswordFile};
use roost::plugin::{Authenticator, Authorizer};
use roost::protect::{DeviceName, Keys, PayloadProtection};
use roost::storage::{open_store, Backend, OnCorrupt};
use roost::{AnonymousAccess, Broker, BrokerBuilder, BrokerHandle, Durability, TlsConfig};

use crate::cli::Parsed;
use crate::config::{
    BackendName, Config, DeviceNameMode, DurabilityMode, ListenerConfig, ListenerKind,
    OnCorruptMode,
};

/// An error's message with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A store and how durable it is.
type Store = (Arc<dyn roost::storage::Storage>, Durability);

/// The store the configuration asks for; `None` for durability none.
fn storage(config: &Config) -> Result<Option<Store>, String> {
    let durability = match config.durability {
        DurabilityMode::None => {
            tracing::warn!("durability none: state is kept in memory only and lost on restart");
            return Ok(None);
        }
        DurabilityMode::Periodic => Durability::Periodic(config.flush_interval),
        DurabilityMode::Acked => Durability::Acked,
    };
    let on_corrupt = match config.on_corrupt {
        OnCorruptMode::Fail => OnCorrupt::Fail,
        OnCorruptMode::Quarantine => OnCorrupt::Quarantine,
    };
    let backend = config.storage.map(|b| match b {
        BackendName::Redb => Backend::Redb,
        BackendName::Sled => Backend::Sled,
    });
    let dir = &config.data_dir;
    let (backend, store) = open_store(dir, backend, on_corrupt).map_err(|e| {
        let hint = match e {
            roost::storage::StorageError::Corrupt { .. } => {
                " (use --on-corrupt quarantine to move it aside and start empty)"
            }
            _ => "",
        };
        format!("{}{hint}", chain(&e))
    })?;
    tracing::info!(dir = %dir.display(), backend = backend.name(), ?durability, "storage opened");
    if backend == Backend::Sled && matches!(durability, Durability::Periodic(_)) {
        tracing::warn!(
            "sled with durability periodic: the flush interval bounds what a crash loses, not \
             what a power cut loses (README, Persistence); use acked or redb"
        );
    }
    Ok(Some((store, durability)))
}

/// The password and ACL files and the TLS configuration in use, for SIGHUP reloads.
struct Files {
    passwords: Option<Arc<PasswordFile>>,
    acl: Option<Arc<AclFile>>,
    tls: Option<Arc<TlsConfig>>,
    /// Each `[[bridge]]`'s TLS, in order.
    bridge_tls: Vec<Option<roost::bridge::BridgeTls>>,
    /// `[protect]`'s device keys.
    protect_keys: Option<Keys>,
}

impl Files {
    /// Loads what the configuration names; the TLS configuration is built here too, so
    /// `--check-config` reads every file the broker would.
    fn load(config: &Config) -> Result<Files, String> {
        let passwords = match &config.password_file {
            Some(path) => Some(Arc::new(PasswordFile::load(path).map_err(|e| chain(&e))?)),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => Some(Arc::new(AclFile::load(path).map_err(|e| chain(&e))?)),
            None => None,
        };
        let tls = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Some(
                TlsConfig::from_pem_files(cert, key, config.client_ca.as_deref())
                    .map_err(|e| chain(&e))?,
            ),
            _ => None,
        };
        let bridge_tls = config
            .bridge
            .iter()
            .map(|b| {
                b.tls()
                    .map_err(|e| format!("bridge {}: {}", b.connection, chain(&e)))
            })
            .collect::<Result<_, _>>()?;
        let protect_keys = match &config.protect {
            Some(p) => Some(Keys::load(&p.key_file).map_err(|e| chain(&e))?),
            None => None,
        };
        Ok(Files {
            passwords,
            acl,
            tls,
            bridge_tls,
            protect_keys,
        })
    }

    /// Re-reads every file; a file that fails keeps its previous contents.
    async fn reload(&self, config: &Config, broker: &BrokerHandle) {
        if let (Some(tls), Some(cert), Some(key)) = (&self.tls, &config.cert, &config.key) {
            match tls.reload_pem_files(cert, key, config.client_ca.as_deref()) {
                Ok(()) => tracing::info!("TLS certificate reloaded (new connections)"),
                Err(e) => {
                    tracing::error!(error = %chain(&e), "TLS certificate not reloaded; previous kept")
                }
            }
        }
        if let Some(p) = &self.passwords {
            match p.reload() {
                Ok(()) => tracing::info!(users = p.len(), "password file reloaded"),
                Err(e) => {
                    tracing::error!(error = %chain(&e), "password file not reloaded; previous contents kept")
                }
            }
        }
        if let Some(k) = &self.protect_keys {
            match k.reload() {
                Ok(devices) => tracing::info!(devices, "device key file reloaded"),
                Err(e) => {
                    tracing::error!(error = %chain(&e), "device key file not reloaded; previous keys kept")
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
                Err(e) => {
                    tracing::error!(error = %chain(&e), "ACL file not reloaded; previous rules kept")
                }
            }
        }
    }
}

/// Registers the authentication the configuration asks for. Anonymous access follows the
/// library's rule ([`AnonymousAccess::Auto`]) unless `allow_anonymous` says otherwise.
fn security(config: &Config, files: &Files, mut builder: BrokerBuilder) -> BrokerBuilder {
    if config.client_ca.is_some() {
        // Mutual TLS: a verified client certificate is the login, named by its Common Name
        // (or Subject Alternative Name); the ACL file then applies to that name.
        tracing::info!("client certificates are logins (CN, else SAN)");
        builder = builder.authenticator(Arc::new(CertificateIdentity::new(
            CertificateName::CommonNameOrSan,
        )));
    }
    if let Some(p) = &files.passwords {
        tracing::info!(users = p.len(), "password file loaded");
        let p: Arc<dyn Authenticator> = p.clone();
        builder = builder.authenticator(p);
    }
    builder = builder.allow_anonymous(match config.allow_anonymous {
        Some(true) => AnonymousAccess::Allow,
        Some(false) => AnonymousAccess::Deny,
        None => AnonymousAccess::Auto,
    });
    if let Some(a) = &files.acl {
        tracing::info!("ACL file loaded");
        let a: Arc<dyn Authorizer> = a.clone();
        builder = builder.authorizer(a);
    }
    if let (Some(table), Some(keys)) = (&config.protect, &files.protect_keys) {
        let mut protection = PayloadProtection::new(Arc::new(keys.clone()))
            .known_devices(table.known_devices)
            .device_name(match table.device_name {
                DeviceNameMode::ClientId => DeviceName::ClientId,
                DeviceNameMode::Username => DeviceName::Username,
            });
        for name in &table.listeners {
            protection = protection.protect_listener(name.clone());
        }
        tracing::info!(listeners = ?table.listeners, known_devices = table.known_devices, "payload protection on");
        builder = protection.install(builder);
    }
    builder
}

/// Adds one listener with its options.
fn listener(
    builder: BrokerBuilder,
    config: &Config,
    tls: Option<&Arc<TlsConfig>>,
    l: &ListenerConfig,
) -> BrokerBuilder {
    let path = l.path.clone().unwrap_or_else(|| config.ws_path.clone());
    let mut builder = match (l.kind, tls) {
        (ListenerKind::Tcp, _) => builder.listen(l.address),
        (ListenerKind::Ws, _) => builder.listen_ws(l.address, path),
        (ListenerKind::Tls, Some(tls)) => builder.listen_tls(l.address, Arc::clone(tls)),
        (ListenerKind::Wss, Some(tls)) => builder.listen_wss(l.address, Arc::clone(tls), path),
        // `Config::finish` refuses TLS listeners without a certificate.
        (ListenerKind::Tls | ListenerKind::Wss, None) => return builder,
    };
    builder = builder.proxy_protocol(l.proxy_protocol.unwrap_or(config.proxy_protocol));
    if let Some(name) = &l.name {
        builder = builder.listener_name(name.clone());
    }
    if let Some(max) = l.max_connections {
        builder = builder.listener_max_connections(max);
    }
    if let Some(max) = l.max_packet_size {
        builder = builder.listener_max_packet_size(max);
    }
    builder
}

/// Every listener of the configuration, the short lists first.
fn listeners(config: &Config) -> Vec<ListenerConfig> {
    let short = |kind, addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(move |&address| ListenerConfig {
                kind,
                address,
                name: None,
                path: None,
                proxy_protocol: None,
                max_connections: None,
                max_packet_size: None,
            })
            .collect::<Vec<_>>()
    };
    let mut all = short(ListenerKind::Tcp, &config.listen);
    all.extend(short(ListenerKind::Tls, &config.tls_listen));
    all.extend(short(ListenerKind::Ws, &config.ws_listen));
    all.extend(short(ListenerKind::Wss, &config.wss_listen));
    all.extend(config.listener.iter().cloned());
    all
}

/// `--check-config`: reads every file the configuration names (password, ACL, TLS) as the
/// broker would, without binding listeners or opening the data directory.
pub(crate) fn check(config: &Config) -> Result<(), String> {
    Files::load(config).map(|_| ())
}

/// The program's own keys (listeners, files, storage, threads) whose value changed: a
/// reload cannot apply them. `[limits]` and `[capabilities]` go to the broker instead.
fn program_keys_changed(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(old), Ok(new)) = (toml::Table::try_from(old), toml::Table::try_from(new)) else {
        return vec!["(the configuration could not be compared)".to_string()];
    };
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|key| *key != "limits" && *key != "capabilities")
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
        .collect()
}

/// Applies a configuration read again: the files are reloaded, per-connection limits and
/// capabilities go to new connections, and everything else is logged as needing a restart.
async fn reload(running: &Config, new: Config, files: &Files, broker: &BrokerHandle) {
    files.reload(running, broker).await;
    let mut restart = program_keys_changed(running, &new);
    match broker.reconfigure(new.limits, new.capabilities) {
        Ok(done) => {
            if !done.applied.is_empty() {
                tracing::info!(
                    settings = %done.applied.join(", "),
                    "configuration reloaded: applied to new connections"
                );
            }
            restart.extend(done.needs_restart.iter().map(|n| format!("limits.{n}")));
        }
        Err(e) => tracing::error!(error = %e, "limits and capabilities not reloaded"),
    }
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "configuration changed; these need a restart and were not applied"
        );
    }
}

/// Runs the broker the configuration describes until Ctrl-C or SIGTERM; SIGHUP reloads.
pub(crate) async fn serve(parsed: Parsed, config: Config) -> ExitCode {
    let files = match Files::load(&config) {
        Ok(f) => f,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let health = match config.http_listen {
        Some(addr) => match crate::http::serve(addr).await {
            Ok(h) => Some(h),
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut builder = Broker::builder()
        .limits(config.limits.clone())
        .capabilities(config.capabilities.clone());
    for l in listeners(&config) {
        builder = listener(builder, &config, files.tls.as_ref(), &l);
    }
    builder = match storage(&config) {
        Ok(Some((store, durability))) => builder.storage(store, durability),
        Ok(None) => builder,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    builder = security(&config, &files, builder);
    for (table, tls) in config.bridge.iter().zip(&files.bridge_tls) {
        let mut bridge = match table.to_config() {
            Ok(bridge) => bridge,
            Err(message) => {
                eprintln!("error: bridge {}: {message}", table.connection);
                return ExitCode::FAILURE;
            }
        };
        if let Some(tls) = tls {
            bridge = bridge.tls(tls.clone());
        }
        builder = builder.bridge(bridge);
    }
    let broker = match builder.build().start().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    if let Some(health) = &health {
        health.ready(&broker);
    }
    tracing::info!(listeners = ?broker.local_addrs(), "roost broker running; Ctrl-C to stop");
    tokio::select! {
        _ = stop_signal() => {}
        _ = hangups(&parsed, &config, &files, &broker) => {}
    }
    broker.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// On each SIGHUP: reads the configuration again, reloads the password, ACL and TLS files,
/// and logs every other change, which needs a restart.
async fn hangups(parsed: &Parsed, running: &Config, files: &Files, broker: &BrokerHandle) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return std::future::pending().await;
        };
        while hup.recv().await.is_some() {
            match parsed.config() {
                Ok(new) => reload(running, new, files, broker).await,
                Err(e) => {
                    tracing::error!(error = %e, "configuration not reloaded; nothing changed")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (parsed, running, files, broker);
        std::future::pending::<()>().await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_program_keys_that_need_a_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.set("max_inflight", "64").expect("valid");
        new.threads = Some(4);
        new.data_dir = "elsewhere".into();
        // Limits go to `BrokerHandle::reconfigure`, which sorts them itself.
        assert_eq!(
            program_keys_changed(&old, &new),
            vec!["data_dir", "threads"]
        );
        assert!(program_keys_changed(&old, &old).is_empty());
    }
}
