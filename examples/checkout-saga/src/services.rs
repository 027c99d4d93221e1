//! The three services: the saga, the payment service, the shop.

use std::sync::Arc;
use std::time::Duration;

use eventsource::process::Commands;
use eventsource::{
    handler_fn, EventBus, EventEnvelope, EventFilter, EventStore, HandlerError, Repository,
    SaveContext, Subscription,
};
use eventsource_store::{
    OutboxRelay, OutboxRelayConfig, ProcessRunner, SqlEventStore, TimeoutScheduler,
};
use tokio_util::sync::CancellationToken;

use crate::domain::{Charge, Order, OrderCommand, OrderEvent, Payment, Request, DECLINE_ABOVE};
use crate::saga::CheckoutSaga;
use crate::Args;

type Outcome = Result<(), Box<dyn std::error::Error>>;

/// Runs a command once per request: the request's id is the command's.
fn once(request: &EventEnvelope, order: &str) -> SaveContext {
    SaveContext {
        correlation_id: Some(order.to_owned()),
        causation_id: Some(request.event_id.to_string()),
        metadata: Default::default(),
    }
}

fn request(event: &EventEnvelope) -> Result<Request, HandlerError> {
    event.decode().map_err(HandlerError::permanent)
}

pub(crate) async fn saga(args: &Args, store: SqlEventStore, bus: Arc<dyn EventBus>) -> Outcome {
    let runner = ProcessRunner::new(
        store.clone(),
        CheckoutSaga {
            payment_wait: args.payment_wait,
        },
        Commands::new(),
        "checkout",
    );
    let _sub = bus
        .subscribe(
            Subscription::builder("checkout")
                .filter(EventFilter::patterns([
                    "Order.Placed",
                    "Payment.*",
                    "checkout.ProcessTimeout",
                ])?)
                .handler(runner)
                .build()?,
        )
        .await?;
    let stop = CancellationToken::new();
    let timeouts = TimeoutScheduler::new(store.clone(), Arc::clone(&bus))
        .poll_interval(Duration::from_millis(100))?;
    let s = stop.clone();
    tokio::spawn(async move { timeouts.run(s).await });
    let mut relaying = OutboxRelayConfig::default();
    relaying.poll_interval = Duration::from_millis(20);
    let relay = OutboxRelay::new(store, Arc::clone(&bus)).with_config(relaying)?;
    let s = stop.clone();
    tokio::spawn(async move { relay.run(s).await });
    println!("[saga] ready");
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

pub(crate) async fn payments(store: SqlEventStore, bus: Arc<dyn EventBus>) -> Outcome {
    let shared: Arc<dyn EventStore> = Arc::new(store);
    let payments = Repository::<Payment>::new(shared).with_bus(Arc::clone(&bus));
    let _sub = bus
        .subscribe(
            Subscription::builder("payments")
                .filter(EventFilter::pattern("Checkout.ChargeRequested")?)
                .handler(handler_fn(move |event: EventEnvelope| {
                    let payments = payments.clone();
                    async move {
                        let Request::ChargeRequested { order, amount } = request(&event)? else {
                            return Ok(());
                        };
                        let saved = payments
                            .execute_once(&order, Charge { amount }, &once(&event, &order))
                            .await
                            .map_err(HandlerError::transient)?;
                        if !saved.is_empty() {
                            println!("[payments] order {order}: {}", saved[0].event_type);
                        }
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;
    println!("[payments] ready");
    let _ = tokio::signal::ctrl_c().await;
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

pub(crate) async fn shop(args: &Args, store: SqlEventStore, bus: Arc<dyn EventBus>) -> Outcome {
    let shared: Arc<dyn EventStore> = Arc::new(store);
    let orders = Repository::<Order>::new(shared).with_bus(Arc::clone(&bus));
    let handling = orders.clone();
    // Flows open at once, at most: a permit per placed order, returned
    // when its outcome is saved.
    let open = Arc::new(tokio::sync::Semaphore::new(args.in_flight));
    let ended = Arc::clone(&open);
    let _sub = bus
        .subscribe(
            Subscription::builder("shop")
                .filter(EventFilter::patterns([
                    "Checkout.ShipRequested",
                    "Checkout.CancelRequested",
                ])?)
                .handler(handler_fn(move |event: EventEnvelope| {
                    let orders = handling.clone();
                    let ended = Arc::clone(&ended);
                    async move {
                        let (order, command) = match request(&event)? {
                            Request::ShipRequested { order } => (order, OrderCommand::Ship),
                            Request::CancelRequested { order, reason } => {
                                (order, OrderCommand::Cancel { reason })
                            }
                            Request::ChargeRequested { .. } => return Ok(()),
                        };
                        let saved = orders
                            .execute_once(&order, command, &once(&event, &order))
                            .await
                            .map_err(HandlerError::transient)?;
                        for e in &saved {
                            match e.decode().map_err(HandlerError::permanent)? {
                                OrderEvent::Shipped => println!("[shop] order {order} shipped"),
                                OrderEvent::Cancelled { reason } => {
                                    println!("[shop] order {order} cancelled: {reason}");
                                }
                                OrderEvent::Placed { .. } => continue,
                            }
                            ended.add_permits(1);
                        }
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;
    println!("[shop] placing {} orders", args.orders);
    for i in 1..=args.orders {
        open.acquire().await?.forget();
        let id = format!("o-{i}");
        let amount = match i % 3 {
            0 => 0,
            1 => 1_500,
            _ => DECLINE_ABOVE + 1,
        };
        let ctx = SaveContext {
            correlation_id: Some(id.clone()),
            causation_id: Some(format!("place-{id}")),
            metadata: Default::default(),
        };
        orders
            .execute_once(&id, OrderCommand::Place { amount }, &ctx)
            .await?;
    }
    println!("[shop] placed {} orders", args.orders);
    let _ = tokio::signal::ctrl_c().await;
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
