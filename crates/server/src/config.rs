//! The broker program's configuration: a TOML file, then environment variables and flags
//! (flags win), all into one [`Config`] whose `limits` and `capabilities` are the library's
//! own [`Limits`] and [`Capabilities`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use roost::{Capabilities, InvalidSetting, Limits, SettingInfo};
use serde::{Deserialize, Serialize};

/// Everything the broker program can be told. Every key is optional in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Plain TCP listeners. With no listener of any kind, `127.0.0.1:1883`.
    pub listen: Vec<SocketAddr>,
    /// MQTT over TLS listeners (need `cert` and `key`).
    pub tls_listen: Vec<SocketAddr>,
    /// MQTT over WebSocket listeners, at `ws_path`.
    pub ws_listen: Vec<SocketAddr>,
    /// MQTT over secure WebSocket listeners (need `cert` and `key`).
    pub wss_listen: Vec<SocketAddr>,
    /// Listeners with options of their own (`[[listener]]` tables).
    pub listener: Vec<ListenerConfig>,
    /// The WebSocket path.
    pub ws_path: String,
    /// Every listener expects a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// Server certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); a certificate's Common Name
    /// (else Subject Alternative Name) is then the client's login.
    pub client_ca: Option<PathBuf>,
    /// Mosquitto password file (`mosquitto_passwd`).
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file.
    pub acl_file: Option<PathBuf>,
    /// Clients without credentials: unset means only when every listener is on loopback
    /// and nothing (password file, client CA, PROXY) asks for credentials.
    pub allow_anonymous: Option<bool>,
    /// Where state is stored.
    pub data_dir: PathBuf,
    /// When stored state is durable.
    pub durability: DurabilityMode,
    /// For `durability = "periodic"`: how often.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// What to do with a data directory that cannot be read.
    pub on_corrupt: OnCorruptMode,
    /// Backend of a new data directory (an existing one opens with the one that made it).
    pub storage: Option<BackendName>,
    /// Runtime worker threads (default: half the cores, rounded up).
    pub threads: Option<usize>,
    /// Where to serve `/metrics` (Prometheus text), `/healthz` and `/readyz` over HTTP
    /// (off when unset).
    pub http_listen: Option<SocketAddr>,
    /// The library's resource limits.
    pub limits: Limits,
    /// What the broker offers MQTT 5.0 clients.
    pub capabilities: Capabilities,
    /// Bridges to other brokers (`[[bridge]]` tables, Mosquitto's option names).
    pub bridge: Vec<BridgeTable>,
    /// Payload protection for devices without TLS (`[protect]`; off when absent).
    pub protect: Option<ProtectTable>,
}

/// `[protect]`: AES-GCM/CCM payload protection (`roost::protect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectTable {
    /// The device key file (`device key-id algorithm hex-key` lines); reloaded on SIGHUP.
    pub key_file: PathBuf,
    /// Listeners (by name: a `[[listener]]`'s `name`, or `kind:address` such as
    /// `tcp:0.0.0.0:1884`) whose every client is a protected device.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Clients whose device name has a key are protected on every listener (default true).
    #[serde(default = "default_true")]
    pub known_devices: bool,
    /// What a device's keys are filed under: `client-id` (default) or `username`.
    #[serde(default)]
    pub device_name: DeviceNameMode,
}

/// `[protect] device_name`: what a device's keys are filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceNameMode {
    /// The Client Identifier.
    #[default]
    #[serde(rename = "client-id")]
    ClientId,
    /// The user name the authenticators vouched for.
    #[serde(rename = "username")]
    Username,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            ws_listen: Vec::new(),
            wss_listen: Vec::new(),
            listener: Vec::new(),
            ws_path: "/mqtt".to_string(),
            proxy_protocol: false,
            cert: None,
            key: None,
            client_ca: None,
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            data_dir: PathBuf::from("roost-data"),
            durability: DurabilityMode::Acked,
            flush_interval: Duration::from_secs(1),
            on_corrupt: OnCorruptMode::Fail,
            storage: None,
            threads: None,
            http_listen: None,
            limits: Limits::default(),
            capabilities: Capabilities::default(),
            bridge: Vec::new(),
            protect: None,
        }
    }
}

/// A bridge to another broker, with the names of Mosquitto's bridge options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTable {
    /// The bridge's name (`connection`).
    pub connection: String,
    /// The remote broker, `host:port` (port 1883 if left out).
    pub address: String,
    /// Topic rules: `pattern [out|in|both [qos [local-prefix remote-prefix]]]`, `""` for
    /// an empty one.
    pub topic: Vec<String>,
    /// `mqttv311` (default, with the bridge bit if `try_private`) or `mqttv50`.
    #[serde(default)]
    pub bridge_protocol_version: BridgeVersion,
    /// Client identifier on the remote (default `roost-<connection>`).
    #[serde(default)]
    pub remote_clientid: Option<String>,
    /// User name on the remote.
    #[serde(default)]
    pub remote_username: Option<String>,
    /// Password on the remote.
    #[serde(default)]
    pub remote_password: Option<String>,
    /// Keep-alive towards the remote, in seconds (default 60).
    #[serde(default = "default_keepalive")]
    pub keepalive_interval: u16,
    /// A new remote session on each connection (default false: the remote keeps it).
    #[serde(default)]
    pub cleansession: bool,
    /// Mark 3.1.1 connections as a bridge (level 0x84) so the remote does not echo
    /// (default true).
    #[serde(default = "default_true")]
    pub try_private: bool,
    /// Reconnect back-off, in seconds: `[base, cap]` or one number for both (default
    /// `[5, 30]`).
    #[serde(default)]
    pub restart_timeout: Option<RestartTimeout>,
    /// CA certificates (PEM) for TLS to the remote; setting it turns TLS on.
    #[serde(default)]
    pub bridge_cafile: Option<PathBuf>,
    /// Client certificate chain (PEM) for the remote.
    #[serde(default)]
    pub bridge_certfile: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub bridge_keyfile: Option<PathBuf>,
}

fn default_keepalive() -> u16 {
    60
}

fn default_true() -> bool {
    true
}

/// Mosquitto's `restart_timeout`: one number, or base and cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RestartTimeout {
    /// The same wait every time.
    Constant(u64),
    /// `[base, cap]`: doubled after each failure up to the cap.
    Backoff([u64; 2]),
}

/// A listener with options of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// What runs over the connection.
    #[serde(default)]
    pub kind: ListenerKind,
    /// Where to listen.
    pub address: SocketAddr,
    /// Its name in logs and to plugins (default `kind:address`).
    #[serde(default)]
    pub name: Option<String>,
    /// WebSocket path (default: `ws_path`).
    #[serde(default)]
    pub path: Option<String>,
    /// Expect a PROXY header (default: `proxy_protocol`).
    #[serde(default)]
    pub proxy_protocol: Option<bool>,
    /// Open connections of this listener at most.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Largest packet accepted on this listener (default: `limits.max_packet_size`).
    #[serde(default)]
    pub max_packet_size: Option<u32>,
}

macro_rules! names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
        #[serde(rename_all = "lowercase")]
        #[clap(rename_all = "lowercase")]
        pub enum $name { $($(#[$vdoc])* $variant,)* }

        impl $name {
            /// Its name in the file and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }
    };
}

names! {
    /// What a listener runs.
    ListenerKind {
        /// MQTT over TCP.
        #[default]
        Tcp = "tcp",
        /// MQTT over TLS.
        Tls = "tls",
        /// MQTT over WebSocket.
        Ws = "ws",
        /// MQTT over secure WebSocket.
        Wss = "wss",
    }
}

names! {
    /// The MQTT version of a bridge (Mosquitto's `bridge_protocol_version`).
    BridgeVersion {
        /// MQTT 3.1.1.
        #[default]
        Mqttv311 = "mqttv311",
        /// MQTT 5.0.
        Mqttv50 = "mqttv50",
    }
}

names! {
    /// When stored state is durable.
    DurabilityMode {
        /// Nothing stored: state is lost on restart.
        None = "none",
        /// Flushed every `flush_interval`; a crash loses up to one interval.
        Periodic = "periodic",
        /// Flushed before acknowledging.
        #[default]
        Acked = "acked",
    }
}

names! {
    /// What to do with an unreadable data directory.
    OnCorruptMode {
        /// Refuse to start.
        #[default]
        Fail = "fail",
        /// Move it aside and start empty.
        Quarantine = "quarantine",
    }
}

names! {
    /// A file storage backend.
    BackendName {
        /// redb: one file.
        #[default]
        Redb = "redb",
        /// sled 0.34.
        Sled = "sled",
    }
}

/// Why the configuration cannot be used. Each names the key (or flag) and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type (the message
    /// gives the line and column).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A flag (or its environment variable) has a value its setting cannot take.
    #[error("--{flag} '{value}': {reason}")]
    Flag {
        /// The flag, without `--`.
        flag: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A limit or capability has a value the broker cannot work with.
    #[error("{section}.{}: {}", .setting.name, .setting.reason)]
    Invalid {
        /// `limits` or `capabilities`.
        section: &'static str,
        /// The setting and the reason.
        setting: InvalidSetting,
    },
    /// Settings that do not go together.
    #[error("{0}")]
    Conflict(String),
}

impl Config {
    /// Reads a configuration file. Unknown keys are refused, with the line and column.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::File {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses configuration text; the error is the parser's message (with the position).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Sets the limit or capability `name` (a [`SettingInfo::name`]) from its text form on
    /// a command line: numbers, `true`/`false`, durations such as `10s`, `none` to unset an
    /// optional one; a redirect is `REFERENCE` (Use another server) or `moved:REFERENCE`
    /// (Server moved).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let flag = || name.replace('_', "-");
        let refuse = |reason: String| ConfigError::Flag {
            flag: flag(),
            value: value.to_string(),
            reason,
        };
        if let Some(info) = Limits::SETTINGS.iter().find(|s| s.name == name) {
            let toml_value = text_value(info, value).map_err(refuse)?;
            self.limits = overlay(&self.limits, name, toml_value).map_err(refuse)?;
        } else if let Some(info) = Capabilities::SETTINGS.iter().find(|s| s.name == name) {
            let toml_value = text_value(info, value).map_err(refuse)?;
            self.capabilities = overlay(&self.capabilities, name, toml_value).map_err(refuse)?;
        } else {
            return Err(refuse("no such setting".to_string()));
        }
        Ok(())
    }

    /// Every listener's name: its `name`, or `kind:address` as the broker names it.
    pub fn listener_names(&self) -> Vec<String> {
        let short = |kind: &str, addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|a| format!("{kind}:{a}"))
                .collect::<Vec<_>>()
        };
        let mut names = short("tcp", &self.listen);
        names.extend(short("tls", &self.tls_listen));
        names.extend(short("ws", &self.ws_listen));
        names.extend(short("wss", &self.wss_listen));
        names.extend(self.listener.iter().map(|l| {
            l.name
                .clone()
                .unwrap_or_else(|| format!("{}:{}", l.kind.as_str(), l.address))
        }));
        names
    }

    /// Fills in what was left to defaults and checks the whole: a listener when none was
    /// given, TLS files where TLS listeners need them, the library's own checks.
    pub fn finish(mut self) -> Result<Config, ConfigError> {
        let any_listener = !(self.listen.is_empty()
            && self.tls_listen.is_empty()
            && self.ws_listen.is_empty()
            && self.wss_listen.is_empty()
            && self.listener.is_empty());
        if !any_listener {
            self.listen.push(SocketAddr::from(([127, 0, 0, 1], 1883)));
        }
        let secure = !self.tls_listen.is_empty()
            || !self.wss_listen.is_empty()
            || self
                .listener
                .iter()
                .any(|l| matches!(l.kind, ListenerKind::Tls | ListenerKind::Wss));
        if secure && (self.cert.is_none() || self.key.is_none()) {
            return Err(ConfigError::Conflict(
                "TLS listeners (tls_listen, wss_listen, kind = \"tls\"/\"wss\") need cert and key"
                    .to_string(),
            ));
        }
        if !secure && self.client_ca.is_some() {
            return Err(ConfigError::Conflict(
                "client_ca is set but there is no TLS listener to ask for certificates".to_string(),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::Conflict(
                "cert and key go together".to_string(),
            ));
        }
        for (i, bridge) in self.bridge.iter().enumerate() {
            bridge
                .to_config()
                .and_then(|c| c.check().map_err(String::from))
                .map_err(|reason| ConfigError::Conflict(format!("bridge[{i}]: {reason}")))?;
            if bridge.bridge_certfile.is_some() != bridge.bridge_keyfile.is_some() {
                return Err(ConfigError::Conflict(format!(
                    "bridge[{i}]: bridge_certfile and bridge_keyfile go together"
                )));
            }
            if bridge.bridge_certfile.is_some() && bridge.bridge_cafile.is_none() {
                return Err(ConfigError::Conflict(format!(
                    "bridge[{i}]: a client certificate needs bridge_cafile (TLS)"
                )));
            }
        }
        if let Some(p) = &self.protect {
            let names = self.listener_names();
            if let Some(unknown) = p.listeners.iter().find(|n| !names.contains(n)) {
                return Err(ConfigError::Conflict(format!(
                    "protect.listeners: no listener is named {unknown:?} (names: {})",
                    names.join(", ")
                )));
            }
        }
        if self.threads == Some(0) {
            return Err(ConfigError::Conflict(
                "threads: must be at least 1".to_string(),
            ));
        }
        self.limits
            .validate()
            .map_err(|setting| ConfigError::Invalid {
                section: "limits",
                setting,
            })?;
        self.capabilities
            .validate()
            .map_err(|setting| ConfigError::Invalid {
                section: "capabilities",
                setting,
            })?;
        Ok(self)
    }
}

impl BridgeTable {
    /// The library's bridge configuration, TLS aside (see [`BridgeTable::tls`]). The error
    /// names the topic line that cannot be read.
    pub fn to_config(&self) -> Result<roost::bridge::BridgeConfig, String> {
        use roost::bridge::{BridgeConfig, BridgeProtocol, BridgeTopic};
        let address = if self
            .address
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            self.address.clone()
        } else {
            format!("{}:1883", self.address)
        };
        let protocol = match self.bridge_protocol_version {
            BridgeVersion::Mqttv311 => BridgeProtocol::V311,
            BridgeVersion::Mqttv50 => BridgeProtocol::V5,
        };
        let (base, cap) = match self.restart_timeout {
            None => (5, 30),
            Some(RestartTimeout::Constant(s)) => (s, s),
            Some(RestartTimeout::Backoff([base, cap])) => (base, cap),
        };
        let mut config = BridgeConfig::new(self.connection.clone(), address)
            .protocol(protocol)
            .keep_alive(Duration::from_secs(u64::from(self.keepalive_interval)))
            .clean_start(self.cleansession)
            .try_private(self.try_private)
            .backoff(Duration::from_secs(base), Duration::from_secs(cap));
        if let Some(id) = &self.remote_clientid {
            config = config.remote_client_id(id.clone());
        }
        if let Some(user) = &self.remote_username {
            let password = self.remote_password.clone().unwrap_or_default();
            config = config.credentials(user.clone(), password.into_bytes());
        }
        for line in &self.topic {
            let rule = BridgeTopic::parse(line).map_err(|e| format!("topic {line:?}: {e}"))?;
            config = config.topic(rule);
        }
        Ok(config)
    }

    /// The TLS configuration `bridge_cafile` (and the client certificate) ask for.
    pub fn tls(&self) -> Result<Option<roost::bridge::BridgeTls>, roost::TlsError> {
        let Some(ca) = &self.bridge_cafile else {
            return Ok(None);
        };
        let client = match (&self.bridge_certfile, &self.bridge_keyfile) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        roost::bridge::BridgeTls::from_pem_files(ca, client).map(Some)
    }
}

/// A setting's value as TOML, from its command-line text.
fn text_value(info: &SettingInfo, text: &str) -> Result<Option<toml::Value>, String> {
    let optional = info.ty.starts_with("Option");
    if optional && text == "none" {
        return Ok(None);
    }
    let base = info
        .ty
        .trim_start_matches("Option")
        .trim_matches(|c| c == '<' || c == '>' || c == ' ');
    Ok(Some(match base {
        "usize" | "u16" | "u32" | "u64" | "QoS" => {
            toml::Value::Integer(text.parse().map_err(|_| {
                format!(
                    "not a whole number{}",
                    if optional { " or none" } else { "" }
                )
            })?)
        }
        "bool" => toml::Value::Boolean(match text {
            "true" => true,
            "false" => false,
            _ => return Err("not true or false".to_string()),
        }),
        "Redirect" => {
            let (permanent, reference) = match text.strip_prefix("moved:") {
                Some(r) => (true, r),
                None => (false, text),
            };
            let mut table = toml::Table::new();
            table.insert("permanent".into(), toml::Value::Boolean(permanent));
            table.insert("reference".into(), toml::Value::String(reference.into()));
            toml::Value::Table(table)
        }
        // Durations and strings: their own text.
        _ => toml::Value::String(text.to_string()),
    }))
}

/// `settings` with `name` set to `value` (`None`: unset), through their serde form, so a
/// flag is checked exactly as the file's key is.
fn overlay<T>(settings: &T, name: &str, value: Option<toml::Value>) -> Result<T, String>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let mut table = toml::Table::try_from(settings).map_err(|e| e.to_string())?;
    match value {
        Some(v) => {
            table.insert(name.to_string(), v);
        }
        None => {
            table.remove(name);
        }
    }
    table.try_into().map_err(|e: toml::de::Error| {
        // The message names the field's type; the flag is named by the caller.
        e.message().trim_end().to_string()
    })
}

/// The program's own keys, documented for `--print-default-config`: the key, its comment,
/// and an example for keys with no default value.
const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("listen", "TCP listeners. With no listener of any kind: 127.0.0.1:1883.", None),
    ("tls_listen", "MQTT over TLS listeners (need cert and key).", None),
    ("ws_listen", "MQTT over WebSocket listeners, at ws_path.", None),
    ("wss_listen", "MQTT over secure WebSocket listeners (need cert and key).", None),
    ("ws_path", "The WebSocket path.", None),
    ("proxy_protocol", "Every listener expects a PROXY protocol header.", None),
    ("cert", "Server certificate chain (PEM).", Some("\"server.pem\"")),
    ("key", "Server private key (PEM).", Some("\"server.key\"")),
    (
        "client_ca",
        "Require client certificates from this CA (PEM); a certificate's CN (else SAN) is the login.",
        Some("\"clients-ca.pem\""),
    ),
    ("password_file", "Mosquitto password file (mosquitto_passwd).", Some("\"passwords\"")),
    ("acl_file", "Mosquitto ACL file.", Some("\"acl\"")),
    (
        "allow_anonymous",
        "Clients without credentials. Unset: only when every listener is on loopback and nothing asks for credentials.",
        Some("false"),
    ),
    ("data_dir", "Where state is stored.", None),
    ("durability", "none, periodic or acked (flushed before acknowledging).", None),
    ("flush_interval", "For durability = \"periodic\": how often.", None),
    ("on_corrupt", "An unreadable data directory: fail, or quarantine (move aside, start empty).", None),
    ("storage", "Backend of a new data directory: redb or sled.", Some("\"redb\"")),
    ("threads", "Runtime worker threads. Unset: half the cores, rounded up.", Some("2")),
    (
        "http_listen",
        "Serve /metrics (Prometheus), /healthz and /readyz over HTTP here. Unset: off.",
        Some("\"127.0.0.1:9090\""),
    ),
];

/// A commented configuration file holding every key at its default.
pub fn default_config_text() -> String {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# Roost broker configuration. Every key is optional; each is shown at its default\n\
         # (commented out where it has none). A flag of the same name, with - for _, overrides\n\
         # a key: --max-packet-size for limits.max_packet_size. Durations: \"250ms\", \"10s\", \"5m\".\n\
         #\n\
         # Listeners with options of their own:\n\
         # [[listener]]\n\
         # kind = \"tcp\"              # tcp, tls, ws or wss\n\
         # address = \"0.0.0.0:1883\"\n\
         # name = \"public\"\n\
         # proxy_protocol = false\n\
         # max_connections = 1000\n\
         # max_packet_size = 65536\n\
         #\n\
         # Bridges to other brokers, with Mosquitto's option names:\n\
         # [[bridge]]\n\
         # connection = \"cloud\"\n\
         # address = \"broker.example:1883\"\n\
         # topic = [\"sensors/# out 1\", 'cmd/# in 1 \"\" edge7/']\n\
         # bridge_protocol_version = \"mqttv311\"   # or mqttv50\n\
         # remote_clientid = \"edge7\"\n\
         # remote_username = \"edge7\"\n\
         # remote_password = \"secret\"\n\
         # keepalive_interval = 60\n\
         # cleansession = false\n\
         # try_private = true\n\
         # restart_timeout = [5, 30]\n\
         # bridge_cafile = \"ca.pem\"        # TLS; with bridge_certfile/bridge_keyfile\n\
         #\n\
         # Payload protection (AES-GCM/CCM envelopes) for devices without TLS:\n\
         # [protect]\n\
         # key_file = \"devices.keys\"      # device key-id algorithm hex-key; reloaded on SIGHUP\n\
         # listeners = [\"devices\"]        # every client of these listeners is protected\n\
         # known_devices = true            # clients with keys are protected on any listener\n\
         # device_name = \"client-id\"      # or username\n\n",
    );
    for (key, doc, example) in KEYS {
        out.push_str(&format!("# {doc}\n"));
        match (defaults.get(*key), example) {
            (Some(value), _) => out.push_str(&format!("{key} = {value}\n\n")),
            (None, Some(example)) => out.push_str(&format!("# {key} = {example}\n\n")),
            (None, None) => out.push('\n'),
        }
    }
    section(&mut out, "limits", Limits::SETTINGS, defaults.get("limits"));
    section(
        &mut out,
        "capabilities",
        Capabilities::SETTINGS,
        defaults.get("capabilities"),
    );
    out
}

/// One `[section]` of the default file: each setting's documentation, then its default.
fn section(out: &mut String, name: &str, settings: &[SettingInfo], values: Option<&toml::Value>) {
    out.push_str(&format!("[{name}]\n"));
    for s in settings {
        for line in s.doc.lines() {
            out.push_str(&format!("#{}\n", line.trim_end()));
        }
        match values.and_then(|v| v.get(s.name)) {
            Some(value) => out.push_str(&format!("{} = {value}\n\n", s.name)),
            None => out.push_str(&format!("# {} =\n\n", s.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default_configuration_and_names_every_setting() {
        let text = default_config_text();
        let parsed = Config::from_toml(&text).expect("the printed file parses");
        assert_eq!(parsed, Config::default());
        for s in Limits::SETTINGS.iter().chain(Capabilities::SETTINGS) {
            assert!(
                text.contains(&format!("{} =", s.name)),
                "{} missing",
                s.name
            );
        }
        let table = toml::Table::try_from(Config::default()).expect("serializes");
        for key in table.keys() {
            assert!(
                KEYS.iter().any(|(k, _, _)| k == key)
                    || key == "limits"
                    || key == "capabilities"
                    || key == "listener"
                    || key == "bridge",
                "{key} is not documented in KEYS"
            );
        }
        for (key, _, _) in KEYS {
            assert!(text.contains(&format!("{key} =")), "{key} missing");
        }
    }

    #[test]
    fn the_protect_table_names_listeners_that_exist() {
        let text = r#"
            listen = ["127.0.0.1:1883"]
            [[listener]]
            address = "0.0.0.0:1884"
            name = "devices"
            [protect]
            key_file = "devices.keys"
            listeners = ["devices", "tcp:127.0.0.1:1883"]
            device_name = "username"
        "#;
        let config = Config::from_toml(text)
            .expect("parses")
            .finish()
            .expect("valid");
        let p = config.protect.expect("[protect]");
        assert_eq!(p.device_name, DeviceNameMode::Username);
        assert!(p.known_devices, "default");
        let wrong = text.replace(r#""devices", "#, r#""device", "#);
        let e = Config::from_toml(&wrong)
            .expect("parses")
            .finish()
            .expect_err("no listener named device");
        assert!(e.to_string().contains("protect.listeners"), "{e}");
        assert!(
            Config::from_toml(
                "[protect]
listeners = []
"
            )
            .is_err(),
            "key_file is required"
        );
    }

    #[test]
    fn bridge_tables_take_mosquittos_option_names() {
        let text = r#"
            [[bridge]]
            connection = "cloud"
            address = "127.0.0.1"
            topic = ["sensors/# out 1", 'cmd/# in 2 "" edge7/']
            bridge_protocol_version = "mqttv50"
            remote_clientid = "edge7"
            remote_username = "edge7"
            remote_password = "secret"
            keepalive_interval = 30
            cleansession = true
            try_private = false
            restart_timeout = [1, 8]
        "#;
        let config = Config::from_toml(text)
            .expect("parses")
            .finish()
            .expect("valid");
        let bridge = config.bridge[0].to_config().expect("a bridge");
        assert_eq!(bridge.name(), "cloud");
        assert_eq!(
            config.bridge[0].restart_timeout,
            Some(RestartTimeout::Backoff([1, 8]))
        );
        let one = Config::from_toml(
            "[[bridge]]\nconnection = \"c\"\naddress = \"h:1\"\ntopic = [\"#\"]\nrestart_timeout = 5\n",
        )
        .expect("parses");
        assert_eq!(
            one.bridge[0].restart_timeout,
            Some(RestartTimeout::Constant(5))
        );
        assert!(!one.bridge[0].cleansession && one.bridge[0].try_private);

        for (bad, why) in [
            ("topic = [\"a sideways\"]", "direction"),
            ("topic = []", "at least one topic"),
            (
                "topic = [\"#\"]\nbridge_certfile = \"c.pem\"",
                "go together",
            ),
        ] {
            let text = format!("[[bridge]]\nconnection = \"c\"\naddress = \"h:1\"\n{bad}\n");
            let err = Config::from_toml(&text)
                .expect("parses")
                .finish()
                .expect_err("refused");
            let message = err.to_string();
            assert!(
                message.starts_with("bridge[0]") && message.contains(why),
                "{message}"
            );
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let err =
            Config::from_toml("listen = [\"127.0.0.1:1883\"]\n\n[limits]\nmax_conections = 5\n")
                .expect_err("refused");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("unknown field `max_conections`"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_durations_name_the_key() {
        let err = Config::from_toml("[limits]\nmax_inflight = \"many\"\n").expect_err("type");
        assert!(
            err.contains("line 2") && err.contains("invalid type"),
            "{err}"
        );
        let err = Config::from_toml("[limits]\nconnect_timeout = \"10 fortnights\"\n")
            .expect_err("duration");
        assert!(err.contains("line 2") && err.contains("duration"), "{err}");
        let err = Config::from_toml("durability = \"sometimes\"\n").expect_err("enum");
        assert!(err.contains("unknown variant `sometimes`"), "{err}");
    }

    #[test]
    fn flags_set_any_setting_by_its_name_and_are_checked_like_the_file() {
        let mut config = Config::default();
        config.set("max_packet_size", "4096").expect("number");
        config.set("connect_timeout", "250ms").expect("duration");
        config.set("max_keep_alive", "30").expect("optional number");
        config.set("maximum_qos", "1").expect("qos");
        config.set("retain_available", "false").expect("bool");
        config
            .set("redirect", "moved:other:1883")
            .expect("redirect");
        assert_eq!(config.limits.max_packet_size, 4096);
        assert_eq!(config.limits.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.capabilities.max_keep_alive, Some(30));
        assert_eq!(config.capabilities.maximum_qos, roost::QoS::AtLeastOnce);
        assert!(!config.capabilities.retain_available);
        let redirect = config.capabilities.redirect.clone().expect("set");
        assert!(redirect.permanent && redirect.reference == "other:1883");
        config.set("max_keep_alive", "none").expect("unset");
        assert_eq!(config.capabilities.max_keep_alive, None);

        for (name, value, reason) in [
            ("max_packet_size", "big", "not a whole number"),
            ("max_inflight", "70000", "u16"),
            ("connect_timeout", "soon", "duration"),
            ("maximum_qos", "3", "a QoS of 0, 1 or 2"),
            ("retain_available", "yes", "not true or false"),
            ("max_pakcet_size", "1", "no such setting"),
        ] {
            let err = config.set(name, value).expect_err(name).to_string();
            assert!(err.contains(reason), "{name}: {err}");
            assert!(
                err.starts_with(&format!("--{}", name.replace('_', "-"))),
                "{err}"
            );
        }
    }

    #[test]
    fn conflicting_and_invalid_settings_are_refused_before_starting() {
        let tls_without_cert = Config {
            tls_listen: vec!["127.0.0.1:8883".parse().expect("address")],
            ..Config::default()
        };
        let err = tls_without_cert.finish().expect_err("conflict").to_string();
        assert!(err.contains("need cert and key"), "{err}");
        let ca_without_tls = Config {
            client_ca: Some("ca.pem".into()),
            ..Config::default()
        };
        let err = ca_without_tls.finish().expect_err("conflict").to_string();
        assert!(err.contains("no TLS listener"), "{err}");
        let mut zero = Config::default();
        zero.set("receive_maximum", "0").expect("a number");
        let err = zero.finish().expect_err("invalid").to_string();
        assert!(err.starts_with("capabilities.receive_maximum:"), "{err}");
        let finished = Config::default().finish().expect("defaults are fine");
        assert_eq!(
            finished.listen,
            vec!["127.0.0.1:1883".parse().expect("address")]
        );
    }
}
