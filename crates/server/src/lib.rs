//! The Roost MQTT broker as a program: `roost-broker` (installed with
//! `cargo install --path crates/server`), and the repository's example broker
//! (`cargo run --release --example broker`), which runs the same [`main`].
//!
//! Settings come from the defaults, a TOML file (`--config`), environment variables
//! (`ROOST_*`) and flags, in that order; the file's `[limits]` and `[capabilities]` tables are
//! the library's own [`roost::Limits`] and [`roost::Capabilities`], and each of their fields
//! is also a flag of the same name (`--max-packet-size`). `--print-default-config` writes a
//! commented file with every default; `--check-config` checks a configuration and the files it
//! names, and exits. A configuration error names the key or flag and the reason, and the
//! program exits with status 2 before binding anything.
//!
//! With no configuration at all it serves MQTT on 127.0.0.1:1883 and keeps its state in
//! `./roost-data`. Ctrl-C or SIGTERM stop it (v5 clients get DISCONNECT 0x8B); SIGHUP
//! reloads the password, ACL and certificate files, applies changed capabilities and
//! per-connection limits to new connections (`BrokerHandle::reconfigure`), and logs every
//! other change, which needs a restart.

pub mod cli;
pub mod config;
mod http;
mod serve;

use std::ffi::OsString;
use std::process::ExitCode;

pub use config::{Config, ConfigError};

/// The allocator the broker program uses (declare it as the `#[global_allocator]` of a
/// binary that runs [`main`]; `roost-broker` and the example broker do). The library does
/// not choose one for an application.
///
/// Every message is allocated by its publisher's connection, on one worker thread, and freed
/// by its subscribers' writers, on others. glibc's malloc takes the owning arena's lock for
/// each such free; mimalloc hands the block back to its owning thread without one.
pub use mimalloc::MiMalloc as Allocator;

/// Exit status of a configuration that cannot be used (as for a command-line error).
const CONFIG_ERROR: u8 = 2;

/// Runs the broker program with the process's arguments.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs the broker program with `args` (the program name first).
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = match cli::parse(args) {
        Ok(p) => p,
        Err(e) => {
            // --help and --version print to standard output and succeed.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(CONFIG_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if parsed.cli.print_default_config {
        print!("{}", config::default_config_text());
        return ExitCode::SUCCESS;
    }
    init_logging();
    let config = match parsed.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    if parsed.cli.check_config {
        return match serve::check(&config) {
            Ok(()) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(CONFIG_ERROR)
            }
        };
    }
    let threads = config.threads.unwrap_or_else(|| {
        default_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    tracing::info!(threads, "runtime worker threads");
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(threads);
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(serve::serve(parsed, config)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads when the configuration sets none, on a machine with `cores` cores (as many
/// as the process may use): half of them, rounded up.
///
/// The broker's work per message is mostly the kernel's (its TCP sends and receives, and the
/// waking of the peers it sends to), and the clients on the same machine need the cores too.
/// A second worker on two cores made the broker spend 8–65% more CPU per message in six of
/// the seven shapes of `scripts/bench-compare.sh` compared, and about the same in the
/// seventh (fan-out to 1,000 subscribers), issue 19: the idle worker takes each small read or
/// wake-up as it comes, so reads and writes carry fewer messages, and the workers hand tasks
/// to each other (about 8x the context switches, 1.5x the sends and receives). One worker
/// delivered as many messages per second or more where the clients were the limit, and
/// 16–30% fewer where one core of broker was (raw fan-in QoS 0, fan-out to 1,000
/// subscribers), still ahead of the other brokers measured.
fn default_threads(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

/// Logs to standard output, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rustls warns about every client that sends an IP address as SNI
                // (mosquitto's clients do): noise at the default level.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error")),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::default_threads;

    #[test]
    fn default_threads_are_half_the_cores_rounded_up() {
        assert_eq!(default_threads(0), 1);
        assert_eq!(default_threads(1), 1);
        assert_eq!(default_threads(2), 1);
        assert_eq!(default_threads(3), 2);
        assert_eq!(default_threads(8), 4);
        assert_eq!(default_threads(64), 32);
    }
}
