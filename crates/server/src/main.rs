//! `roost-broker`: the Roost MQTT broker. `roost-broker --help` lists every option.

fn main() -> std::process::ExitCode {
    roost_server::main()
}
