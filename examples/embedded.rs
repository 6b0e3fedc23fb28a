//! An application with an embedded broker: it publishes and subscribes in-process while
//! network clients connect over TCP.
//!
//! ```sh
//! cargo run --example embedded
//! # in another terminal, watch the application's readings and send it a command:
//! mosquitto_sub -p 1883 -t 'app/#' -v
//! mosquitto_pub -p 1883 -t cmd/app -m hello
//! ```
//!
//! It publishes a reading every second for 30 seconds (or until Ctrl-C), echoes every
//! command it receives on `cmd/app` to `app/echo`, then shuts the broker down.

use std::time::Duration;

use roost::{Broker, ClientOptions, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let broker = Broker::builder()
        .listen("127.0.0.1:1883".parse()?)
        .build()
        .start()
        .await?;
    println!("broker on {:?}", broker.local_addrs());

    // The application's own client: no socket, same sessions and retained messages.
    let (app, mut commands) = broker.client(ClientOptions::new("app")).await?;
    app.subscribe("cmd/app", QoS::AtLeastOnce).await?;
    app.publish("app/status", "online", QoS::AtLeastOnce, true)
        .await?;

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for reading in 0..30u32 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {
                app.publish("app/reading", reading.to_string(), QoS::AtMostOnce, false).await?;
            }
            Some(command) = commands.recv() => {
                println!("command on {}: {:?}", command.topic, command.payload);
                app.publish("app/echo", command.payload, QoS::AtLeastOnce, false).await?;
            }
        }
    }
    app.publish("app/status", "offline", QoS::AtLeastOnce, true)
        .await?;
    app.disconnect().await?;
    broker.shutdown().await;
    Ok(())
}
