//! A service whose bus metrics Prometheus scrapes.
//!
//! ```sh
//! cargo run -p metrics-prometheus -- [BUS_URL] [LISTEN]
//! curl -s 127.0.0.1:9464/metrics | grep eventsource_
//! ```
//!
//! It subscribes the `billing` group (which dead-letters events of the
//! aggregate `bad`), publishes a few orders, reads the group's lag and
//! dead-letter depth from the broker every 5 s, and serves `/metrics`
//! until Ctrl-C.

use std::time::Duration;

use eventsource::{handler_fn, EventEnvelope, HandlerError, Subscription};
use metrics_prometheus::{router, Metrics};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "memory://".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9464".into());

    let metrics = Metrics::install()?;
    let bus = eventsource::connect_url(&url).await?;
    let _billing = bus
        .subscribe(
            Subscription::builder("billing")
                .handler(handler_fn(|e| async move {
                    if e.aggregate_id == "bad" {
                        return Err(HandlerError::permanent("cannot bill this order"));
                    }
                    Ok(())
                }))
                .build()?,
        )
        .await?;
    let orders: Vec<EventEnvelope> = ["o-1", "o-2", "bad", "o-3"]
        .iter()
        .map(|id| {
            EventEnvelope::from_json(
                "order",
                *id,
                1,
                "placed",
                serde_json::json!({ "order": id }),
            )
        })
        .collect();
    bus.publish(&orders).await?;

    let stop = CancellationToken::new();
    tokio::spawn(eventsource::metrics::watch_groups(
        bus.clone(),
        vec!["billing".into()],
        Duration::from_secs(5),
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
    axum::serve(listener, router(metrics.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    stop.cancel();
    bus.shutdown(Duration::from_secs(5)).await?;
    metrics.shutdown();
    Ok(())
}
