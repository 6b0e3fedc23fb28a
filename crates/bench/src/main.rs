//! `roost-bench`: a load generator for any MQTT broker at host:port.
//!
//! ```text
//! roost-bench [--host 127.0.0.1] [--port 1883] [--sub-port PORT] [--pid BROKER_PID] [--scenario fan-in|fan-out]
//!             [--qos 0|1|2] [--publishers 8] [--subscribers 32] [--messages N]
//!             [--payload BYTES] [--timeout-s 60] [--repeat 1] [--seal KEY_HEX]
//!             [--batch BYTES [--window 100]]
//! roost-bench --scenario latency [--rate 5000] [--seconds 5] [--qos 0|1|2]
//! roost-bench --scenario idle [--connections 10000] [--pid BROKER_PID]
//! roost-bench --scenario in-process [--publishers 1] [--subscribers 1] [--messages N]
//! roost-bench --scenario idle-in-process [--connections 100000]
//! ```
//!
//! fan-in: P publishers → 1 wildcard subscriber; fan-out: 1 publisher → S subscribers. With
//! `--pid` it reads the broker's CPU time from `/proc/PID/stat` and reports messages per
//! broker-CPU-second. Every run checks delivery: QoS 1/2 loss fails the run (exit 1); QoS 0
//! counts are reported. `--sub-port` connects the subscribers to another port than the
//! publishers: the far side of a bridge (`scripts/bench-bridge.sh`). `--seal` makes the
//! publishers (`bench-pub-N`) protected devices: each payload is sealed as `roost::protect`
//! expects (`scripts/bench-protect.sh`). `--batch` switches to raw clients: publishers write
//! PUBLISHes in batches of about that many bytes with at most `--window` unacknowledged
//! (QoS 1/2), subscribers read 64 KiB at a time and acknowledge each read's messages in one
//! write. With `--pid`, the broker's peak RSS during each run is reported too.

use std::process::ExitCode;

use roost_bench::{
    run_idle, run_idle_in_process, run_in_process, run_latency, run_repeated, Scenario, Settings,
};

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}\n{}", roost_bench::USAGE);
            return ExitCode::from(2);
        }
    };
    // In-process: broker and clients on one thread (one core); otherwise two workers.
    let mut builder = if matches!(
        settings.scenario,
        Scenario::InProcess | Scenario::IdleInProcess
    ) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match settings.scenario {
            Scenario::Latency => run_latency(&settings).await.map(|r| {
                let complete = settings.qos == 0 || r.received == r.sent;
                (r.to_string(), complete)
            }),
            Scenario::InProcess => run_in_process(&settings).await.map(|r| {
                let complete = settings.qos == 0
                    || r.delivered == r.published * settings.subscribers.max(1) as u64;
                (r.to_string(), complete)
            }),
            Scenario::IdleInProcess => run_idle_in_process(&settings)
                .await
                .map(|r| (r.to_string(), r.connected == settings.connections)),
            Scenario::Idle => run_idle(&settings)
                .await
                .map(|r| (r.to_string(), r.connected == settings.connections)),
            Scenario::FanIn | Scenario::FanOut => run_repeated(&settings)
                .await
                .map(|r| (r.to_string(), r.complete())),
        }
    });
    match outcome {
        Ok((report, complete)) => {
            println!("{report}");
            if complete {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: incomplete run (QoS {} loss or refused connections)",
                    settings.qos
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
