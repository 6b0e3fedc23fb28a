//! A broker with every transport, in code: plain TCP on loopback, MQTT over TLS, and
//! WebSocket over TLS, from PEM files.
//!
//! ```sh
//! cargo run --example tls_broker -- server.pem server.key [client-ca.pem]
//! mosquitto_pub -p 8883 --cafile ca.pem -t hello -m tls
//! ```
//!
//! (The README's TLS section makes test certificates with openssl.) With a third argument,
//! clients must present a certificate from that CA (mutual TLS), and their certificate's
//! Common Name becomes their user name. SIGHUP reloads the certificate files.

use std::path::PathBuf;
use std::sync::Arc;

use roost::auth::{AllowAll, CertificateIdentity};
use roost::{Broker, TlsConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (Some(cert), Some(key)) = (args.first(), args.get(1)) else {
        eprintln!("usage: tls_broker CERT.pem KEY.pem [CLIENT-CA.pem]");
        std::process::exit(2);
    };
    let client_ca = args.get(2);
    let tls = TlsConfig::from_pem_files(cert, key, client_ca.map(PathBuf::as_path))?;
    let broker = Broker::builder()
        .listen("127.0.0.1:1883".parse()?)
        .listen_tls("0.0.0.0:8883".parse()?, Arc::clone(&tls))
        .listen_wss("0.0.0.0:8084".parse()?, Arc::clone(&tls), "/mqtt")
        // A client certificate (mutual TLS) names the user; clients without one are let in
        // anonymously here — put a password file or an authorizer in front for more.
        .authenticator(Arc::new(CertificateIdentity::default()))
        .authenticator(Arc::new(AllowAll::new()))
        .build()
        .start()
        .await?;
    println!("listening on {:?}", broker.local_addrs());
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => match tls.reload_pem_files(cert, key, client_ca.map(PathBuf::as_path)) {
                Ok(()) => println!("certificate reloaded"),
                Err(e) => eprintln!("reload failed, keeping the old certificate: {e}"),
            },
        }
    }
    broker.shutdown().await;
    Ok(())
}
