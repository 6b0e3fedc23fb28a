//! The core's large-scale shape stays as issue 14 left it: no import cycle among broker,
//! connection, transport, router, persist and session; nothing but the facade and the
//! builder refers to the `broker` module; no function in `connection/` over 80 lines.
//! `scripts/module-graph.py --rules` checks it from the sources (and prints the graph
//! without arguments).

mod support;

#[test]
fn the_core_has_no_cycles_no_back_references_and_short_connection_functions() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/module-graph.py"))
        .arg("--rules")
        .output();
    let Ok(out) = out else {
        support::skip_unless_optional("python3");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
