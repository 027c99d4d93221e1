//! A process manager across three services on one event bus (Redis
//! Streams by default; any bus URL the facade knows).
//!
//! - `checkout-saga saga`: consumer group `checkout` runs the checkout
//!   saga ([`saga::CheckoutSaga`]) with its steps and timeouts in its own
//!   SQLite store, its requests published through that store's outbox and
//!   its timeouts fired by a scheduler in the same process;
//! - `checkout-saga payments`: consumer group `payments` charges each
//!   order once (`Repository::execute_once`, keyed by the request's id);
//! - `checkout-saga shop --orders N`: places N orders (every third for 0
//!   cents, which the payment service never answers; every third above
//!   the decline limit), then, as consumer group `shop`, ships or cancels
//!   each as the saga asks, printing `[shop] order o-7 shipped` or
//!   `[shop] order o-9 cancelled: no payment in time`; `--in-flight K`
//!   places an order only while fewer than K flows are open.
//!
//! Every process takes `--bus URL` (default `redis://127.0.0.1:6379`),
//! `--namespace NS` (default `checkout-saga`) and `--store sqlite://FILE`
//! (its own); `saga` takes `--payment-wait-ms N` (default 30000). Kill the
//! saga process at any point and start it again: every flow still ends
//! once, a timeout that fell due meanwhile fires on restart.

mod domain;
mod saga;
mod services;

use std::sync::Arc;
use std::time::Duration;

use eventsource::{BusConfig, EventBus};
use eventsource_store::{SqlEventStore, StoreConfig};

pub(crate) struct Args {
    command: String,
    bus: String,
    namespace: String,
    store: String,
    orders: usize,
    in_flight: usize,
    payment_wait: Duration,
}

fn args() -> Result<Args, String> {
    let mut all = std::env::args().skip(1);
    let command = all.next().ok_or(
        "usage: checkout-saga shop|payments|saga [--bus URL] [--namespace NS] --store URL \
         [--orders N] [--in-flight N] [--payment-wait-ms N]",
    )?;
    let mut args = Args {
        command,
        bus: "redis://127.0.0.1:6379".to_owned(),
        namespace: "checkout-saga".to_owned(),
        store: String::new(),
        orders: 9,
        in_flight: tokio::sync::Semaphore::MAX_PERMITS,
        payment_wait: Duration::from_secs(30),
    };
    while let Some(flag) = all.next() {
        let value = all.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v}: not a whole number"))
        };
        match flag.as_str() {
            "--bus" => args.bus = value,
            "--namespace" => args.namespace = value,
            "--store" => args.store = value,
            "--orders" => args.orders = number(&value)? as usize,
            "--in-flight" => {
                args.in_flight =
                    (number(&value)? as usize).clamp(1, tokio::sync::Semaphore::MAX_PERMITS)
            }
            "--payment-wait-ms" => args.payment_wait = Duration::from_millis(number(&value)?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.store.is_empty() {
        return Err("--store sqlite://FILE is needed (one per service)".into());
    }
    Ok(args)
}

async fn connect(args: &Args) -> eventsource::Result<Arc<dyn EventBus>> {
    let source = format!("checkout-saga/{}", args.command);
    // A killed member's messages move to the next one after 2 s.
    let takeover = Duration::from_secs(2);
    let config = match BusConfig::from_url(&args.bus)?.with_namespace(&args.namespace) {
        BusConfig::Redis(mut c) => {
            c.source = source;
            c.claim_min_idle = takeover;
            c.claim_interval = Duration::from_millis(500);
            BusConfig::Redis(c)
        }
        BusConfig::Nats(mut c) => {
            c.source = source;
            c.ack_wait = takeover;
            c.progress_interval = Duration::from_millis(500);
            BusConfig::Nats(c)
        }
        BusConfig::Rabbitmq(mut c) => {
            c.source = source;
            BusConfig::Rabbitmq(c)
        }
        other => other,
    };
    eventsource::connect_bus(&config).await
}

async fn store(url: &str) -> eventsource::Result<SqlEventStore> {
    SqlEventStore::connect(StoreConfig::new(url)).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let bus = connect(&args).await?;
    let store = store(&args.store).await?;
    match args.command.as_str() {
        "saga" => services::saga(&args, store, bus).await,
        "payments" => services::payments(store, bus).await,
        "shop" => services::shop(&args, store, bus).await,
        other => Err(format!("unknown command {other}").into()),
    }
}
