//! `roost-broker`: the Roost MQTT broker. `roost-broker --help` lists every option.

#[global_allocator]
static ALLOCATOR: roost_server::Allocator = roost_server::Allocator;

fn main() -> std::process::ExitCode {
    roost_server::main()
}
