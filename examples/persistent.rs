//! Persistence: a broker that keeps retained messages and persistent sessions in a data
//! directory (the default backend, redb; or sled if the directory holds a sled store),
//! survives a restart, and acknowledges only what is durable.
//!
//! ```sh
//! cargo run --example persistent            # first run: stores state in ./roost-example-data
//! cargo run --example persistent            # second run: finds it again
//! ```
//!
//! The program starts a broker on the data directory, connects an in-process client with a
//! persistent session, and shows what survived from the previous run: the retained
//! `counter` topic, and the messages queued for the session while it was away. Then it
//! bumps the counter, queues one more message for next time, and stops cleanly.

use std::time::Duration;

use roost::storage::{open_store, OnCorrupt};
use roost::{Broker, ClientOptions, Durability, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from("roost-example-data");
    let (_backend, store) = open_store(&dir, None, OnCorrupt::Fail)?;
    let broker = Broker::builder()
        .storage(store, Durability::Acked)
        .sys_interval(None)
        .build()
        .start()
        .await?;

    // A persistent session: kept while we are away, restored after a restart.
    let options = ClientOptions::new("example-app").persistent(true);
    let (app, mut inbox) = broker.client(options.clone()).await?;
    app.subscribe("counter", QoS::AtLeastOnce).await?;
    app.subscribe("mailbox/#", QoS::AtLeastOnce).await?;

    let mut count = 0u64;
    // Whatever is retained or queued arrives right after subscribing.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), inbox.recv()).await {
        let text = String::from_utf8_lossy(&m.payload).to_string();
        println!(
            "restored: {} = {text}{}",
            m.topic,
            if m.retain { " (retained)" } else { "" }
        );
        if m.topic.as_str() == "counter" {
            count = text.parse().unwrap_or(0);
        }
    }
    if count == 0 {
        println!("no counter yet: first run in {}", dir.display());
    }

    // The PUBACK behind this call comes back only once the retained message is on disk.
    app.publish("counter", (count + 1).to_string(), QoS::AtLeastOnce, true)
        .await?;
    println!("counter is now {}", count + 1);

    // Leave; then a message arrives for the session while it is away.
    app.disconnect().await?;
    let (sender, _) = broker.client(ClientOptions::new("example-sender")).await?;
    sender
        .publish(
            "mailbox/note",
            format!("left while away, run {}", count + 1),
            QoS::AtLeastOnce,
            false,
        )
        .await?;
    broker.shutdown().await; // flushes the store
    println!("stopped; run again to see the state come back");
    Ok(())
}
