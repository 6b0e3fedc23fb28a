//! The command line: the program's own options (derived), plus one flag per library setting,
//! generated from [`Limits::SETTINGS`] and [`Capabilities::SETTINGS`] so that none is
//! missing and each has the name of its key (`--max-packet-size` for
//! `limits.max_packet_size`) and an environment variable (`ROOST_MAX_PACKET_SIZE`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, CommandFactory, FromArgMatches, Parser};
use roost::{Capabilities, Limits, SettingInfo};

use crate::config::{BackendName, Config, ConfigError, DurabilityMode, OnCorruptMode};

/// The Roost MQTT broker (MQTT 3.1, 3.1.1 and 5.0).
///
/// Settings come from the defaults, then the file given with --config, then environment
/// variables, then flags. Every key of the file has a flag of the same name.
#[derive(Debug, Clone, Parser)]
#[command(name = "roost-broker", version, max_term_width = 100)]
pub struct Cli {
    /// Read this TOML configuration file (see --print-default-config).
    #[arg(long, env = "ROOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration (file, environment and flags, and the files it names) and
    /// exit: status 0 if the broker would start with it, 2 if not.
    #[arg(long)]
    pub check_config: bool,
    /// Print a commented configuration file holding every default, and exit.
    #[arg(long, conflicts_with = "check_config")]
    pub print_default_config: bool,

    /// TCP listener (repeatable; replaces the file's list).
    #[arg(
        long,
        env = "ROOST_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR",
        help_heading = "Listeners"
    )]
    pub listen: Vec<SocketAddr>,
    /// MQTT over TLS listener (repeatable; needs --cert and --key).
    #[arg(
        long,
        env = "ROOST_TLS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR",
        help_heading = "Listeners"
    )]
    pub tls_listen: Vec<SocketAddr>,
    /// MQTT over WebSocket listener (repeatable).
    #[arg(
        long,
        env = "ROOST_WS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR",
        help_heading = "Listeners"
    )]
    pub ws_listen: Vec<SocketAddr>,
    /// MQTT over secure WebSocket listener (repeatable; needs --cert and --key).
    #[arg(
        long,
        env = "ROOST_WSS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR",
        help_heading = "Listeners"
    )]
    pub wss_listen: Vec<SocketAddr>,
    /// WebSocket path [default: /mqtt].
    #[arg(
        long,
        env = "ROOST_WS_PATH",
        value_name = "PATH",
        help_heading = "Listeners"
    )]
    pub ws_path: Option<String>,
    /// Every listener expects a PROXY protocol header.
    #[arg(
        long,
        env = "ROOST_PROXY_PROTOCOL",
        value_name = "BOOL",
        help_heading = "Listeners"
    )]
    pub proxy_protocol: Option<bool>,

    /// Server certificate chain (PEM).
    #[arg(
        long,
        env = "ROOST_CERT",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(
        long,
        env = "ROOST_KEY",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub key: Option<PathBuf>,
    /// Require client certificates from this CA (mutual TLS); a certificate's CN (else
    /// SAN) is the client's login.
    #[arg(
        long,
        env = "ROOST_CLIENT_CA",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub client_ca: Option<PathBuf>,
    /// Mosquitto password file (mosquitto_passwd); reloaded on SIGHUP.
    #[arg(
        long,
        env = "ROOST_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file; reloaded on SIGHUP.
    #[arg(
        long,
        env = "ROOST_ACL_FILE",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub acl_file: Option<PathBuf>,
    /// Clients without credentials [default: only when every listener is on loopback and
    /// nothing asks for credentials].
    #[arg(
        long,
        env = "ROOST_ALLOW_ANONYMOUS",
        value_name = "BOOL",
        help_heading = "Security"
    )]
    pub allow_anonymous: Option<bool>,

    /// Where state is stored [default: roost-data].
    #[arg(
        long,
        env = "ROOST_DATA_DIR",
        value_name = "DIR",
        help_heading = "Storage"
    )]
    pub data_dir: Option<PathBuf>,
    /// When stored state is durable [default: acked].
    #[arg(long, env = "ROOST_DURABILITY", help_heading = "Storage")]
    pub durability: Option<DurabilityMode>,
    /// For --durability periodic: how often, e.g. 500ms [default: 1s].
    #[arg(
        long,
        env = "ROOST_FLUSH_INTERVAL",
        value_name = "DURATION",
        help_heading = "Storage"
    )]
    pub flush_interval: Option<humantime::Duration>,
    /// An unreadable data directory [default: fail].
    #[arg(long, env = "ROOST_ON_CORRUPT", help_heading = "Storage")]
    pub on_corrupt: Option<OnCorruptMode>,
    /// Backend of a new data directory [default: redb].
    #[arg(long, env = "ROOST_STORAGE", help_heading = "Storage")]
    pub storage: Option<BackendName>,
    /// Earlier form of --flush-interval, in milliseconds.
    #[arg(
        long,
        hide = true,
        value_name = "MS",
        conflicts_with = "flush_interval"
    )]
    pub flush_interval_ms: Option<u64>,
    /// Earlier form of --max-storage-bytes, in MiB.
    #[arg(long, hide = true, value_name = "MIB")]
    pub max_storage_mb: Option<u64>,

    /// Runtime worker threads [default: half the cores, rounded up].
    #[arg(long, env = "ROOST_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP here [default: off].
    #[arg(long, env = "ROOST_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<std::net::SocketAddr>,
}

/// Flags that kept their earlier, shorter names as aliases.
const ALIASES: &[(&str, &str)] = &[
    ("max_queued_messages", "max-queued"),
    ("max_session_expiry_interval", "max-session-expiry"),
];

/// The whole command: the derived options and the generated setting flags.
pub fn command() -> clap::Command {
    let settings = |heading: &'static str, list: &'static [SettingInfo]| {
        list.iter().map(move |s| setting_arg(s, heading))
    };
    Cli::command()
        .args(settings("Limits", Limits::SETTINGS))
        .args(settings("Capabilities (MQTT 5.0)", Capabilities::SETTINGS))
}

/// The flag of one library setting.
fn setting_arg(s: &SettingInfo, heading: &'static str) -> Arg {
    let mut arg = Arg::new(s.name)
        .long(s.name.replace('_', "-"))
        .env(format!("ROOST_{}", s.name.to_uppercase()))
        .value_name(value_name(s.ty))
        .help(s.summary())
        .long_help(s.doc.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .help_heading(heading);
    for (name, alias) in ALIASES {
        if *name == s.name {
            arg = arg.visible_alias(*alias);
        }
    }
    arg
}

/// How `--help` shows a setting's value.
fn value_name(ty: &str) -> &'static str {
    match ty {
        "bool" => "BOOL",
        "Duration" => "DURATION",
        "QoS" => "0|1|2",
        "Option<Redirect>" => "[moved:]HOST:PORT|none",
        t if t.starts_with("Option") => "N|none",
        "String" => "TEXT",
        _ => "N",
    }
}

/// What the command line asked for: the program's options, and the library settings it
/// set, as (name, text) in the order of the settings' tables.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The program's own options.
    pub cli: Cli,
    /// Library settings set by flags or environment variables.
    pub settings: Vec<(&'static str, String)>,
}

/// Parses a command line (the program name first).
pub fn parse<I, T>(args: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let settings = Limits::SETTINGS
        .iter()
        .chain(Capabilities::SETTINGS)
        .filter_map(|s| {
            matches
                .get_one::<String>(s.name)
                .map(|v| (s.name, v.clone()))
        })
        .collect();
    Ok(Parsed { cli, settings })
}

impl Parsed {
    /// The configuration: defaults, the file, then what the command line set; checked.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let cli = &self.cli;
        let mut config = match &cli.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        // A list given on the command line replaces the file's.
        for (flag, file) in [
            (&cli.listen, &mut config.listen),
            (&cli.tls_listen, &mut config.tls_listen),
            (&cli.ws_listen, &mut config.ws_listen),
            (&cli.wss_listen, &mut config.wss_listen),
        ] {
            if !flag.is_empty() {
                file.clone_from(flag);
            }
        }
        set(&mut config.ws_path, cli.ws_path.clone());
        set(&mut config.proxy_protocol, cli.proxy_protocol);
        set(&mut config.data_dir, cli.data_dir.clone());
        set(&mut config.durability, cli.durability);
        set(&mut config.on_corrupt, cli.on_corrupt);
        set(
            &mut config.flush_interval,
            cli.flush_interval.map(Into::into),
        );
        set(
            &mut config.flush_interval,
            cli.flush_interval_ms.map(std::time::Duration::from_millis),
        );
        for (file, flag) in [
            (&mut config.cert, &cli.cert),
            (&mut config.key, &cli.key),
            (&mut config.client_ca, &cli.client_ca),
            (&mut config.password_file, &cli.password_file),
            (&mut config.acl_file, &cli.acl_file),
        ] {
            if flag.is_some() {
                file.clone_from(flag);
            }
        }
        if cli.allow_anonymous.is_some() {
            config.allow_anonymous = cli.allow_anonymous;
        }
        if cli.storage.is_some() {
            config.storage = cli.storage;
        }
        if cli.threads.is_some() {
            config.threads = cli.threads;
        }
        if cli.http_listen.is_some() {
            config.http_listen = cli.http_listen;
        }
        if let Some(mb) = cli.max_storage_mb {
            config.limits.max_storage_bytes = Some(mb.saturating_mul(1024 * 1024));
        }
        for (name, value) in &self.settings {
            config.set(name, value)?;
        }
        config.finish()
    }
}

/// Replaces `slot` with `value` when there is one.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Parsed {
        parse(std::iter::once("roost-broker").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn every_library_setting_has_a_flag_and_an_environment_variable() {
        let command = command();
        for s in Limits::SETTINGS.iter().chain(Capabilities::SETTINGS) {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == s.name)
                .unwrap_or_else(|| panic!("no flag for {}", s.name));
            assert_eq!(arg.get_long(), Some(s.name.replace('_', "-").as_str()));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(format!("ROOST_{}", s.name.to_uppercase()).as_str())
            );
        }
        command.debug_assert();
    }

    #[test]
    fn flags_override_the_file_and_earlier_names_still_work() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("roost.toml");
        std::fs::write(
            &file,
            "listen = [\"127.0.0.1:1884\"]\n[limits]\nmax_inflight = 8\nmax_queued_messages = 5\n\
             [capabilities]\nreceive_maximum = 7\n",
        )
        .expect("writes");
        let parsed = parse_ok(&[
            "--config",
            file.to_str().expect("utf-8"),
            "--max-inflight",
            "16",
            "--max-queued",
            "50",
            "--max-session-expiry",
            "60",
            "--flush-interval-ms",
            "250",
            "--max-storage-mb",
            "2",
        ]);
        let config = parsed.config().expect("valid");
        assert_eq!(
            config.listen,
            vec!["127.0.0.1:1884".parse().expect("address")]
        );
        assert_eq!(config.limits.max_inflight, 16, "the flag wins");
        assert_eq!(config.limits.max_queued_messages, 50);
        assert_eq!(
            config.capabilities.receive_maximum, 7,
            "the file's, untouched"
        );
        assert_eq!(config.capabilities.max_session_expiry_interval, 60);
        assert_eq!(config.flush_interval, std::time::Duration::from_millis(250));
        assert_eq!(config.limits.max_storage_bytes, Some(2 * 1024 * 1024));
    }

    #[test]
    fn a_mistyped_flag_gets_a_suggestion_and_conflicting_flags_are_refused() {
        let err = parse(["roost-broker", "--max-packet-sise", "1"]).expect_err("unknown");
        assert!(err.to_string().contains("--max-packet-size"), "{err}");
        let err = parse(["roost-broker", "--check-config", "--print-default-config"])
            .expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = parse([
            "roost-broker",
            "--flush-interval",
            "1s",
            "--flush-interval-ms",
            "5",
        ])
        .expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = parse(["roost-broker", "--durability", "sometimes"]).expect_err("value");
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn a_bad_setting_value_names_its_flag() {
        let parsed = parse_ok(&["--receive-maximum", "many"]);
        let err = parsed.config().expect_err("refused").to_string();
        assert!(
            err.starts_with("--receive-maximum 'many': not a whole number"),
            "{err}"
        );
        let parsed = parse_ok(&["--connect-timeout", "0.5 fortnights"]);
        let err = parsed.config().expect_err("refused").to_string();
        assert!(err.starts_with("--connect-timeout"), "{err}");
    }
}
