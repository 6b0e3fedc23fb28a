//! The example broker: a complete MQTT broker with no configuration needed. It runs the
//! broker program of `crates/server` (installed as `roost-broker` with
//! `cargo install --path crates/server`), so both take the same flags and file.
//!
//! ```sh
//! cargo run --release --example broker                      # 127.0.0.1:1883, ./roost-data
//! cargo run --release --example broker -- --listen 0.0.0.0:1883 --listen [::1]:1884
//! cargo run --release --example broker -- --print-default-config > roost.toml
//! cargo run --release --example broker -- --config roost.toml
//! cargo run --release --example broker -- --help            # every flag
//! RUST_LOG=debug cargo run --release --example broker        # more logging
//! ```
//!
//! Every field of `roost::Limits` and `roost::Capabilities` is a key of the file's
//! `[limits]` and `[capabilities]` tables and a flag of the same name (`--max-packet-size`),
//! and an environment variable (`ROOST_MAX_PACKET_SIZE`). Flags win over the environment,
//! which wins over the file.
//!
//! Anonymous clients are allowed by default only when nothing else is configured that calls
//! for credentials or lets strangers in: every listener on a loopback address, no password
//! file, no client CA, no PROXY protocol. The log says which policy is in force and why.
//! SIGHUP reloads the password, ACL and certificate files (connections stay; subscriptions
//! the new ACL refuses are removed), applies changed capabilities and per-connection limits
//! to new connections, and logs other changes, which need a restart. It stops
//! cleanly on Ctrl-C or SIGTERM: v5 clients get DISCONNECT 0x8B.

/// The broker program's allocator (see `roost_server::Allocator`).
#[global_allocator]
static ALLOCATOR: roost_server::Allocator = roost_server::Allocator;

fn main() -> std::process::ExitCode {
    roost_server::main()
}
