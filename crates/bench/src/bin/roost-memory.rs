//! `roost-memory`: the memory scenarios of issue 12 §2 against a running broker, printing
//! the broker's RSS growth per case as a Markdown table.
//!
//! ```text
//! roost-memory --port 1883 --pid <broker pid> [--ws-port 8083] [--only aliases,trie]
//! ```

use std::process::ExitCode;

use roost_bench::{run_memory, MemoryTarget};

fn main() -> ExitCode {
    let mut host = "127.0.0.1".to_string();
    let mut port = 1883u16;
    let mut ws_port = None;
    let mut pid = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--host" => host = value,
            "--port" => port = value.parse().unwrap_or(port),
            "--ws-port" => ws_port = value.parse().ok(),
            "--pid" => pid = value.parse().ok(),
            "--only" => only = value.split(',').map(str::to_string).collect(),
            _ => {
                eprintln!(
                    "usage: roost-memory --port N --pid PID [--ws-port N] [--host H] [--only a,b]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(pid) = pid else {
        eprintln!("--pid is required (the broker's process id)");
        return ExitCode::from(2);
    };
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        eprintln!("--host must be an IP address");
        return ExitCode::from(2);
    };
    let target = MemoryTarget {
        addr: (ip, port).into(),
        ws: ws_port.map(|p| (ip, p).into()),
        pid,
        only,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_memory(&target)) {
        Ok(cases) => {
            println!("| case | what | RSS growth | note |");
            println!("|---|---|---|---|");
            for c in cases {
                println!(
                    "| {} | {} | {:+.1} MiB | {} |",
                    c.name,
                    c.what,
                    c.growth_kib as f64 / 1024.0,
                    c.note
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roost-memory: {e}");
            ExitCode::FAILURE
        }
    }
}
