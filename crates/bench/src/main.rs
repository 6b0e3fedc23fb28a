//! `roost-bench`: a load generator for any MQTT broker at host:port.
//!
//! ```text
//! roost-bench [--host 127.0.0.1] [--port 1883] [--pid BROKER_PID] [--scenario fan-in|fan-out]
//!             [--qos 0|1|2] [--publishers 8] [--subscribers 32] [--messages N]
//!             [--payload BYTES] [--timeout-s 60]
//! ```
//!
//! fan-in: P publishers → 1 wildcard subscriber; fan-out: 1 publisher → S subscribers. With
//! `--pid` it reads the broker's CPU time from `/proc/PID/stat` and reports messages per
//! broker-CPU-second. Every run checks delivery: QoS 1/2 loss fails the run (exit 1); QoS 0
//! counts are reported.

use std::process::ExitCode;

use roost_bench::{run, Settings};

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}\n{}", roost_bench::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&settings)) {
        Ok(report) => {
            println!("{report}");
            let complete = settings.qos == 0 || report.delivered == report.expected;
            if complete {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: QoS {} messages lost", settings.qos);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
