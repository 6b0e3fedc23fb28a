//! A gateway broker for devices that cannot run TLS: they seal their payloads with AES-GCM
//! (or AES-CCM) under a key they share with the broker (`roost::protect`), send them over
//! plain TCP, and the application inside the gateway sees plaintext.
//!
//! ```sh
//! cargo run --example protected_devices             # runs a demo device, then stops
//! cargo run --example protected_devices -- serve    # then keeps serving on 127.0.0.1:1885
//! ```
//!
//! It writes a key file (`protected-devices/devices.keys`) with one device, `sensor-1`,
//! starts a broker whose `devices` listener (127.0.0.1:1885) is protected, and then plays
//! the device over a real TCP connection (rumqttc, payloads sealed with
//! `roost::protect::envelope`): a reading goes up and arrives as plaintext at an
//! in-process subscriber, a command goes down and the device opens it with its key. A
//! payload tampered with on the way is refused (v5 PUBACK 0x99) and never routed.
//!
//! With `serve`, try the reference device (needs Python's `cryptography` package):
//!
//! ```sh
//! python3 scripts/protected_device.py publish --port 1885 --id sensor-1 --key-id 1 \
//!     --key 000102030405060708090a0b0c0d0e0f --topic sensors/sensor-1/temp --message 22.0 \
//!     --state sensor-1.state
//! ```

use std::sync::Arc;
use std::time::Duration;

use roost::protect::envelope::{self, Direction, Header};
use roost::protect::{Algorithm, DeviceKey, Keys, PayloadProtection};
use roost::{Broker, ClientOptions, QoS};
use rumqttc::v5::mqttbytes::v5::{Packet as V5Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let serve = std::env::args().nth(1).as_deref() == Some("serve");
    // The key file: one line per device key (device, key id, algorithm, key in hex).
    let dir = std::path::Path::new("protected-devices");
    std::fs::create_dir_all(dir)?;
    let key_file = dir.join("devices.keys");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("sensor-1 1 aes-128-gcm {hex}\n"))?;
    let keys = Keys::load(&key_file)?;
    let protection = PayloadProtection::new(Arc::new(keys)).protect_listener("devices");
    let port = if serve { 1885 } else { 0 };
    let (_, store) =
        roost::storage::open_store(&dir.join("data"), None, roost::storage::OnCorrupt::Fail)?;
    let broker = protection
        .install(
            Broker::builder()
                .listen(([127, 0, 0, 1], port).into())
                .listener_name("devices")
                .storage(store, roost::Durability::Acked),
        )
        .build()
        .start()
        .await?;
    let addr = broker.local_addrs()[0];

    // The application inside the gateway: plaintext in, plaintext out.
    let (app, mut readings) = broker.client(ClientOptions::new("app")).await?;
    app.subscribe("sensors/#", QoS::AtLeastOnce).await?;

    // The device, over plain TCP. Its sequence numbers must grow across its restarts; a
    // real device keeps the last one in flash. Here: after the broker's stored mark.
    let key = DeviceKey::new(Algorithm::Aes128Gcm, &KEY)?;
    let mut seq = protection.last_inbound_seq("sensor-1");
    let mut options = MqttOptions::new("sensor-1", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (device, mut events) = AsyncClient::new(options, 16);
    device
        .subscribe("cmd/sensor-1", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await?;
    let topic = "sensors/sensor-1/temp";
    seq += 1;
    let reading = seal(&key, seq, topic, b"21.5");
    device
        .publish(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            reading.clone(),
        )
        .await?;
    // The same envelope with one bit flipped: refused, never routed.
    let mut tampered = seal(&key, seq + 1, topic, b"99.9");
    tampered[30] ^= 1;
    device
        .publish(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            tampered,
        )
        .await?;
    let mut refusals = 0;
    let mut command_sent = false;
    let mut command_got = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Err("the demo did not finish".into()),
            Some(m) = readings.recv() => {
                println!("app got {} {}", m.topic, String::from_utf8_lossy(&m.payload));
                if !command_sent {
                    app.publish("cmd/sensor-1", "fan on", QoS::AtLeastOnce, false).await?;
                    command_sent = true;
                }
            }
            event = events.poll() => match event? {
                Event::Incoming(V5Packet::PubAck(ack)) if ack.reason != PubAckReason::Success => {
                    refusals += 1;
                    println!("device's tampered message refused: {:?}", ack.reason);
                }
                Event::Incoming(V5Packet::Publish(p)) => {
                    let topic = String::from_utf8_lossy(&p.topic).to_string();
                    let header = envelope::peek(&p.payload)?;
                    let plain = envelope::open(&key, Direction::Down, &topic, &p.payload)?;
                    println!(
                        "device got {topic} {} (sealed, key {}, seq {})",
                        String::from_utf8_lossy(&plain),
                        header.key_id,
                        header.seq
                    );
                    command_got = true;
                }
                _ => {}
            },
        }
        if refusals > 0 && command_got {
            break;
        }
    }
    println!("payload protection: {:?}", protection.stats());
    if serve {
        println!("serving protected devices on {addr}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    broker.shutdown().await;
    Ok(())
}

/// Seals `plaintext` for `topic` as a device does: the next sequence number, and a nonce
/// made from it.
fn seal(key: &DeviceKey, seq: u64, topic: &str, plaintext: &[u8]) -> Vec<u8> {
    let header = Header::counter(1, seq, [0; 4]);
    envelope::seal(key, Direction::Up, &header, topic, plaintext).unwrap_or_default()
}
