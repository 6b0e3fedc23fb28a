//! An embedded broker at the edge, bridged to a central one: local `sensors/#` goes out
//! (as `site/edge7/sensors/...`), and the central broker's `site/edge7/cmd/#` comes back in
//! (as `cmd/...`).
//!
//! ```sh
//! cargo run --example bridge                      # central broker: a second embedded one
//! cargo run --example bridge -- 127.0.0.1:1884    # central broker: one already running there
//! ```
//!
//! With no address it starts the central broker itself on a loopback port, so the example
//! runs anywhere; it then publishes a reading at the edge, receives it centrally, sends a
//! command centrally, receives it at the edge, prints the bridge's status and stops.

use std::time::Duration;

use roost::bridge::{BridgeConfig, BridgeTopic};
use roost::{Broker, ClientOptions, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // The central broker: the one named on the command line, or a second embedded one.
    let (central, address) = match std::env::args().nth(1) {
        Some(address) => (None, address),
        None => {
            let central = Broker::builder()
                .listen("127.0.0.1:0".parse()?)
                .build()
                .start()
                .await?;
            let address = central.local_addrs()[0].to_string();
            (Some(central), address)
        }
    };
    let bridge = BridgeConfig::new("central", address)
        .topic(BridgeTopic::parse("sensors/# out 1 \"\" site/edge7/")?)
        .topic(BridgeTopic::parse("# in 1 cmd/ site/edge7/cmd/")?)
        .backoff(Duration::from_millis(200), Duration::from_secs(5));
    let edge = Broker::builder()
        .listen("127.0.0.1:0".parse()?)
        .bridge(bridge)
        .build()
        .start()
        .await?;
    while !edge.bridges()[0].connected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (device, mut commands) = edge.client(ClientOptions::new("device")).await?;
    device.subscribe("cmd/#", QoS::AtLeastOnce).await?;
    if let Some(central) = &central {
        let (operator, mut readings) = central.client(ClientOptions::new("operator")).await?;
        operator
            .subscribe("site/edge7/sensors/#", QoS::AtLeastOnce)
            .await?;
        device
            .publish("sensors/temp", "21.5", QoS::AtLeastOnce, false)
            .await?;
        if let Some(m) = readings.recv().await {
            println!(
                "central got {} {}",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            );
        }
        operator
            .publish("site/edge7/cmd/fan", "on", QoS::AtLeastOnce, false)
            .await?;
    } else {
        device
            .publish("sensors/temp", "21.5", QoS::AtLeastOnce, false)
            .await?;
        println!("published sensors/temp; waiting 30 s for commands on site/edge7/cmd/#");
    }
    let wait = if central.is_some() { 5 } else { 30 };
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(wait), commands.recv()).await {
        println!(
            "edge got {} {}",
            m.topic,
            String::from_utf8_lossy(&m.payload)
        );
    }
    println!("{:#?}", edge.bridges());
    edge.shutdown().await;
    if let Some(central) = central {
        central.shutdown().await;
    }
    Ok(())
}
