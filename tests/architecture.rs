//! The core's large-scale shape stays as issue 14 left it: no import cycle among broker,
//! connection, transport, router, persist and session; nothing but the facade and the
//! builder refers to the `broker` module; no function in `connection/` over 80 lines.
//! `scripts/module-graph.py --rules` checks it from the sources (and prints the graph
//! without arguments).

mod support;

#[test]
fn the_core_has_no_cycles_no_back_references_and_short_connection_functions() {
    support::script_check("module-graph.py", &["--rules"]);
}
