//! An embedded broker with a small HTTP admin surface on the control API (axum):
//!
//! ```sh
//! cargo run --example admin                      # MQTT on 127.0.0.1:1883, admin on :8080
//! curl -s 127.0.0.1:8080/clients                 # sessions, a page at a time (?after=ID)
//! curl -s 127.0.0.1:8080/clients/sensor-1        # one session, with its subscriptions
//! curl -s -X POST 127.0.0.1:8080/clients/sensor-1/kick    # v5 clients get 0x98
//! curl -s '127.0.0.1:8080/retained?filter=sensors/%23'    # retained messages, paged
//! curl -s -X DELETE '127.0.0.1:8080/retained?filter=sensors/%23'
//! ```
//!
//! The admin listener is on loopback and has no authentication of its own: put it behind
//! whatever guards your application's other admin endpoints.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use roost::{Broker, BrokerHandle, SessionInfo, TopicName};
use serde_json::{json, Value};

type Params = Query<HashMap<String, String>>;

fn session_json(s: &SessionInfo) -> Value {
    let client = s.client.as_ref();
    json!({
        "client_id": s.client_id,
        "connected": s.connected,
        "user": client.and_then(|c| c.identity.username.clone()),
        "listener": client.map(|c| c.listener.to_string()),
        "peer": client.and_then(|c| c.peer).map(|p| p.to_string()),
        "keep_alive_s": s.keep_alive.map(|k| k.as_secs()),
        "queued": s.queued,
        "queued_bytes": s.queued_bytes,
        "inflight": s.inflight,
        "subscriptions": s.subscriptions.iter()
            .map(|(f, o)| json!({"filter": f.as_str(), "qos": o.qos as u8}))
            .collect::<Vec<_>>(),
        "subscription_count": s.subscription_count,
    })
}

async fn clients(State(broker): State<BrokerHandle>, Query(q): Params) -> Json<Value> {
    let page = broker.sessions(q.get("after").map(String::as_str), 100);
    Json(Value::Array(page.iter().map(session_json).collect()))
}

async fn client(
    State(broker): State<BrokerHandle>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    let session = broker.session(&id).ok_or(StatusCode::NOT_FOUND)?;
    Ok(Json(session_json(&session)))
}

async fn kick(State(broker): State<BrokerHandle>, Path(id): Path<String>) -> StatusCode {
    if broker.disconnect_client(&id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn retained(
    State(broker): State<BrokerHandle>,
    Query(q): Params,
) -> Result<Json<Value>, (StatusCode, String)> {
    let filter = q.get("filter").map_or("#", String::as_str);
    let after = match q.get("after") {
        Some(a) => Some(TopicName::new(a.as_str()).map_err(bad)?),
        None => None,
    };
    let page = broker.retained(filter, after.as_ref(), 100).map_err(bad)?;
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(|m| json!({"topic": m.topic.as_str(), "bytes": m.payload.len(), "qos": m.qos as u8}))
        .collect();
    Ok(Json(
        json!({"messages": messages, "next": page.next.map(|t| t.to_string())}),
    ))
}

async fn clear_retained(
    State(broker): State<BrokerHandle>,
    Query(q): Params,
) -> Result<Json<Value>, (StatusCode, String)> {
    let filter = q
        .get("filter")
        .ok_or((StatusCode::BAD_REQUEST, "filter=".into()))?;
    let cleared = broker.clear_retained(filter.as_str()).await.map_err(bad)?;
    Ok(Json(json!({ "cleared": cleared })))
}

fn bad(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, e.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mqtt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".into());
    let admin = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let broker = Broker::builder()
        .listen(mqtt.parse()?)
        .build()
        .start()
        .await?;
    let app = Router::new()
        .route("/clients", get(clients))
        .route("/clients/{id}", get(client))
        .route("/clients/{id}/kick", post(kick))
        .route("/retained", get(retained).delete(clear_retained))
        .with_state(broker.clone());
    let listener = tokio::net::TcpListener::bind(&admin).await?;
    println!("admin on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    broker.shutdown().await;
    Ok(())
}
