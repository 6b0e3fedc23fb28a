//! TLS and mutual TLS listeners, with certificates generated in the test (rcgen) and a real
//! client (rumqttc over rustls): encrypted pub/sub, client-certificate identity, refused
//! clients, handshake timeouts that do not block others, and certificate reload.

mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roost::auth::CertificateIdentity;
use roost::plugin::{ClientInfo, Hooks};
use roost::{Broker, BrokerHandle, Limits, TlsConfig};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, Transport};
use support::tls::{client_tls, connected, refused, server_tls, Ca};
use support::within;
use tokio::io::AsyncReadExt;

async fn tls_broker(
    tls: Arc<TlsConfig>,
    limits: Limits,
    hooks: Option<Arc<dyn Hooks>>,
) -> BrokerHandle {
    let mut b = Broker::builder()
        .listen_tls("127.0.0.1:0".parse().expect("address"), tls)
        .limits(limits)
        .authenticator(Arc::new(CertificateIdentity::default()))
        .authenticator(Arc::new(roost::auth::AllowAll::new()))
        .sys_interval(None);
    if let Some(h) = hooks {
        b = b.hooks(h);
    }
    b.build().start().await.expect("starts")
}

fn client(
    broker: &BrokerHandle,
    id: &str,
    ca: &Ca,
    client_auth: Option<(String, String)>,
) -> (AsyncClient, rumqttc::EventLoop) {
    let port = broker.local_addrs()[0].port();
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::Tls(client_tls(ca, client_auth)));
    AsyncClient::new(o, 16)
}

/// Issue 15 §2: an application with both of rustls's crypto providers compiled in (this
/// test binary: `aws_lc_rs` from rumqttc's defaults, `ring` from Roost's `tls-ring`) and
/// no process default installed still starts TLS listeners: Roost names its provider
/// instead of asking rustls for the process default, which would panic here.
#[tokio::test]
async fn both_crypto_providers_are_compiled_in_and_none_is_installed() {
    use tokio_rustls::rustls::crypto::{aws_lc_rs, ring, CryptoProvider};
    // Both providers exist in this build (this would not compile otherwise) ...
    let _ = (aws_lc_rs::default_provider(), ring::default_provider());
    // ... and nobody chose one for the process.
    assert!(CryptoProvider::get_default().is_none());
    let ca = Ca::new("both-providers CA");
    let broker = tls_broker(server_tls(&ca, None), Limits::default(), None).await;
    let (c, mut el) = client(&broker, "both-providers", &ca, None);
    connected(&mut el).await.expect("connects over TLS");
    within(c.disconnect()).await.expect("disconnect");
    assert!(
        CryptoProvider::get_default().is_none(),
        "the broker must not install a process default behind the application's back"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn publish_and_subscribe_over_tls() {
    let ca = Ca::new("test CA");
    let broker = tls_broker(server_tls(&ca, None), Limits::default(), None).await;
    let (sub, mut sub_el) = client(&broker, "tls-sub", &ca, None);
    connected(&mut sub_el).await.expect("TLS connect");
    within(sub.subscribe("secure/#", QoS::AtLeastOnce))
        .await
        .expect("queued");
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) = within(sub_el.poll()).await.expect("polls") {
            break;
        }
    }
    let (publ, mut pub_el) = client(&broker, "tls-pub", &ca, None);
    connected(&mut pub_el).await.expect("TLS connect");
    tokio::spawn(async move { while pub_el.poll().await.is_ok() {} });
    within(publ.publish("secure/x", QoS::AtLeastOnce, false, "over tls"))
        .await
        .expect("queued");
    loop {
        if let Event::Incoming(Incoming::Publish(p)) = within(sub_el.poll()).await.expect("polls") {
            assert_eq!(&p.payload[..], b"over tls");
            break;
        }
    }
    // A client that does not trust the server's CA cannot connect.
    let other = Ca::new("other CA");
    let (_c, mut el) = client(&broker, "tls-untrusting", &other, None);
    refused(&mut el).await;
    broker.shutdown().await;
}

#[derive(Default)]
struct Seen(Mutex<Vec<(String, Option<String>)>>);

impl Hooks for Seen {
    fn client_connected(&self, c: &ClientInfo) {
        self.0
            .lock()
            .push((c.client_id.to_string(), c.identity.username.clone()));
    }
}

#[tokio::test]
async fn mutual_tls_identity_reaches_the_authenticator() {
    let ca = Ca::new("test CA");
    let seen = Arc::new(Seen::default());
    let broker = tls_broker(
        server_tls(&ca, Some(&ca)),
        Limits::default(),
        Some(seen.clone()),
    )
    .await;
    let (cert, key) = ca.issue(&["device-7.example"], "device-7");
    let (_c, mut el) = client(&broker, "mtls-client", &ca, Some((cert, key)));
    connected(&mut el).await.expect("mTLS connect");
    let who = ("mtls-client".to_string(), Some("device-7".to_string()));
    assert!(
        seen.0.lock().contains(&who),
        "identity from the certificate's CN"
    );
    // Without a client certificate the handshake is refused.
    let (_c, mut el) = client(&broker, "no-cert", &ca, None);
    refused(&mut el).await;
    // And with a certificate from another CA.
    let rogue = Ca::new("rogue CA");
    let (cert, key) = rogue.issue(&["x"], "mallory");
    let (_c, mut el) = client(&broker, "rogue", &ca, Some((cert, key)));
    refused(&mut el).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn silent_handshakes_are_dropped_without_blocking_others() {
    // The handshake timeout (2 s) is longer than the real client's whole allowance (1 s):
    // a broker that waited on the silent sockets one at a time, or even on one of them,
    // fails the first check.
    let ca = Ca::new("test CA");
    let timeout = Duration::from_secs(2);
    let limits = Limits::default().with_handshake_timeout(timeout);
    let broker = tls_broker(server_tls(&ca, None), limits, None).await;
    // Ten connections that never start the handshake.
    let opened = std::time::Instant::now();
    let mut silent = Vec::new();
    for _ in 0..10 {
        let s = within(tokio::net::TcpStream::connect(broker.local_addrs()[0])).await;
        silent.push(s.expect("connects"));
    }
    // A real client still gets in, well before any silent one times out.
    let (_c, mut el) = client(&broker, "real", &ca, None);
    tokio::time::timeout(Duration::from_secs(1), connected(&mut el))
        .await
        .expect("not blocked by half-open handshakes")
        .expect("TLS connect");
    // The silent ones are closed by the timeout: not before it, and not much after.
    for mut s in silent {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed by the broker");
        let after = opened.elapsed();
        assert!(
            after >= timeout - Duration::from_millis(100),
            "closed after {after:?}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn certificate_reload_applies_to_new_connections() {
    let old_ca = Ca::new("old CA");
    let tls = server_tls(&old_ca, None);
    let broker = tls_broker(tls.clone(), Limits::default(), None).await;
    let (early, mut before) = client(&broker, "before", &old_ca, None);
    connected(&mut before).await.expect("old certificate");
    // Renew with a certificate from another CA, from files as an operator would.
    let new_ca = Ca::new("new CA");
    let (cert, key) = new_ca.issue(&["127.0.0.1"], "renewed");
    let dir = std::env::temp_dir().join(format!("roost-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("cert.pem"), cert).expect("write");
    std::fs::write(dir.join("key.pem"), key).expect("write");
    tls.reload_pem_files(&dir.join("cert.pem"), &dir.join("key.pem"), None)
        .expect("reloads");
    let _ = std::fs::remove_dir_all(&dir);
    let (_b, mut after) = client(&broker, "after", &new_ca, None);
    connected(&mut after).await.expect("new certificate");
    let (_c, mut stale) = client(&broker, "stale", &old_ca, None);
    assert!(
        connected(&mut stale).await.is_err(),
        "old certificate no longer served"
    );
    // The connection made before the reload is untouched: a QoS 1 publish is acknowledged.
    within(early.publish("t", QoS::AtLeastOnce, false, "still here"))
        .await
        .expect("queued");
    loop {
        match within(before.poll()).await {
            Ok(Event::Incoming(Incoming::PubAck(_))) => break,
            Ok(_) => continue,
            Err(e) => panic!("old connection broke: {e}"),
        }
    }
    broker.shutdown().await;
}

/// Issue 12 §1.4: with mutual TLS, the ACL file authorizes the certificate's identity, not
/// the User Name the client claims in CONNECT: alice's certificate with user name "admin"
/// gets alice's rules.
#[tokio::test]
async fn acl_rules_follow_the_certificate_not_the_claimed_user_name() {
    use roost::auth::{AclFile, AclRules};
    use rumqttc::SubscribeReasonCode;
    let ca = Ca::new("test CA");
    let rules = "user admin\ntopic readwrite #\nuser alice\ntopic readwrite alice/#\n";
    let broker = Broker::builder()
        .listen_tls(
            "127.0.0.1:0".parse().expect("address"),
            server_tls(&ca, Some(&ca)),
        )
        .authenticator(Arc::new(CertificateIdentity::default()))
        .authorizer(Arc::new(AclFile::from_rules(
            AclRules::parse(rules).expect("parses"),
        )))
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts");
    let port = broker.local_addrs()[0].port();
    let mut o = MqttOptions::new("mtls-alice", "127.0.0.1", port);
    o.set_credentials("admin", "anything");
    let (cert, key) = ca.issue(&[], "alice");
    o.set_transport(Transport::Tls(client_tls(&ca, Some((cert, key)))));
    let (c, mut el) = AsyncClient::new(o, 16);
    connected(&mut el).await.expect("mTLS connect");
    let mut granted = Vec::new();
    for filter in ["admin/#", "alice/#"] {
        within(c.subscribe(filter, QoS::AtLeastOnce))
            .await
            .expect("queued");
        loop {
            if let Event::Incoming(Incoming::SubAck(a)) = within(el.poll()).await.expect("polls") {
                granted.push(a.return_codes);
                break;
            }
        }
    }
    assert_eq!(
        granted,
        vec![
            vec![SubscribeReasonCode::Failure],
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        ],
        "alice's rules, not admin's"
    );
    broker.shutdown().await;
}

/// Issue 13 §7: a refused TLS handshake is logged at info with the peer and the reason (and
/// what to do, where the reason alone does not say), once a minute per address.
#[tokio::test]
async fn refused_tls_handshakes_are_logged_with_peer_and_reason() {
    let (logs, _guard) = support::LogBuf::capture("info");
    let ca = Ca::new("test CA");
    let broker = tls_broker(server_tls(&ca, Some(&ca)), Limits::default(), None).await;
    let rogue = Ca::new("rogue CA");
    for _ in 0..3 {
        let (cert, key) = rogue.issue(&["x"], "mallory");
        let (_c, mut el) = client(&broker, "rogue", &ca, Some((cert, key)));
        assert!(connected(&mut el).await.is_err());
    }
    broker.shutdown().await;
    let text = logs.text();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("TLS handshake refused"))
        .collect();
    assert_eq!(refused.len(), 1, "once a minute per address:\n{text}");
    let line = refused[0];
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("not signed by the --client-ca"), "{line}");
}

/// A broker whose bridge goes over TLS to `remote` with `tls`, forwarding `up/#` out.
async fn bridging_over_tls(remote: &BrokerHandle, tls: roost::bridge::BridgeTls) -> BrokerHandle {
    use roost::bridge::{BridgeConfig, BridgeTopic};
    let config = BridgeConfig::new(
        "tls",
        format!("localhost:{}", remote.local_addrs()[0].port()),
    )
    .tls(tls)
    .topic(BridgeTopic::parse("up/# out 1").expect("rule"))
    .backoff(Duration::from_millis(50), Duration::from_millis(100));
    Broker::builder()
        .bridge(config)
        .sys_interval(None)
        .build()
        .start()
        .await
        .expect("starts")
}

/// Issue 16 §1: a bridge connects over TLS with a client certificate; a remote whose
/// certificate does not chain to the bridge's CA is refused, logged and retried.
#[tokio::test]
async fn bridges_connect_over_tls_and_refuse_untrusted_remotes() {
    let ca = Ca::new("bridge test CA");
    let remote = tls_broker(server_tls(&ca, Some(&ca)), Limits::default(), None).await;
    let (cert, key) = ca.issue(&[], "edge-bridge");
    let tls = roost::bridge::BridgeTls::from_pem(
        ca.pem.as_bytes(),
        Some((cert.as_bytes(), key.as_bytes())),
    )
    .expect("bridge TLS");
    let local = bridging_over_tls(&remote, tls).await;
    let (far, mut far_rx) = remote
        .client(roost::ClientOptions::new("far"))
        .await
        .expect("connects");
    far.subscribe("up/#", roost::QoS::AtLeastOnce)
        .await
        .expect("subscribes");
    within(async {
        while !local.bridges()[0].connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (near, _near_rx) = local
        .client(roost::ClientOptions::new("near"))
        .await
        .expect("connects");
    near.publish("up/t", "over tls", roost::QoS::AtLeastOnce, false)
        .await
        .expect("published");
    let got = within(far_rx.recv()).await.expect("message");
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref()),
        ("up/t", &b"over tls"[..])
    );

    // A CA that did not sign the remote's certificate: the handshake fails every time.
    let stranger = Ca::new("some other CA");
    let tls = roost::bridge::BridgeTls::from_pem(stranger.pem.as_bytes(), None).expect("TLS");
    let local = bridging_over_tls(&remote, tls).await;
    let status = within(async {
        loop {
            let s = local.bridges().remove(0);
            if s.connect_failures >= 2 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        matches!(status.last_error, Some(roost::bridge::BridgeError::Tls(_))),
        "{status:?}"
    );
}
