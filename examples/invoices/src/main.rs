//! Invoices, in one process on the in-memory bus.
//!
//! The invoice service publishes `INVOICE_CREATED` events with a JSON
//! payload and no Rust event type ([`EventEnvelope::from_json`]). Two
//! services subscribe, each as its own consumer group: the ledger books
//! every invoice's total per customer, the tax service sums the VAT due
//! per rate. The bus keeps an event log of what was published, listed at
//! the end.
//!
//! Run it with `cargo run -p invoices`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource::memory::{MemoryBus, MemoryBusConfig};
use eventsource::{handler_fn, EventBus, EventEnvelope, EventFilter, HandlerError, Subscription};
use serde_json::json;
use tokio::sync::mpsc;

/// The invoices the service issues: id, customer, net amount in cents, VAT rate in percent.
const INVOICES: [(&str, &str, u64, u64); 4] = [
    ("inv-1", "ada", 10_000, 20),
    ("inv-2", "grace", 25_000, 20),
    ("inv-3", "ada", 5_000, 5),
    ("inv-4", "linus", 1_000, 0),
];

type Totals = Arc<Mutex<BTreeMap<String, u64>>>;

/// The number in `field` of an invoice's payload; a payload without it is
/// a permanent failure (dead-lettered, never retried).
fn amount(event: &EventEnvelope, field: &str) -> Result<u64, HandlerError> {
    event.payload[field].as_u64().ok_or_else(|| {
        HandlerError::permanent(format!("invoice {} has no `{field}`", event.aggregate_id))
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = MemoryBus::with_config(MemoryBusConfig::new().event_log(100))?;
    let (done_tx, mut done) = mpsc::unbounded_channel::<()>();

    let ledger: Totals = Arc::default();
    let (book, tx) = (Arc::clone(&ledger), done_tx.clone());
    let _ledger = bus
        .subscribe(
            Subscription::builder("ledger")
                .filter(EventFilter::event_type("INVOICE_CREATED"))
                .handler(handler_fn(move |event| {
                    let (book, tx) = (Arc::clone(&book), tx.clone());
                    async move {
                        let total = amount(&event, "net_cents")?
                            * (100 + amount(&event, "vat_percent")?)
                            / 100;
                        let customer = event.payload["customer"].as_str().unwrap_or("?").to_owned();
                        *book.lock().expect("ledger").entry(customer).or_default() += total;
                        let _ = tx.send(());
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;

    let tax: Totals = Arc::default();
    let (due, tx) = (Arc::clone(&tax), done_tx);
    let _tax = bus
        .subscribe(
            Subscription::builder("tax")
                .filter(EventFilter::event_type("INVOICE_CREATED"))
                .handler(handler_fn(move |event| {
                    let (due, tx) = (Arc::clone(&due), tx.clone());
                    async move {
                        let rate = amount(&event, "vat_percent")?;
                        let vat = amount(&event, "net_cents")? * rate / 100;
                        *due.lock()
                            .expect("tax")
                            .entry(format!("{rate}%"))
                            .or_default() += vat;
                        let _ = tx.send(());
                        Ok(())
                    }
                }))
                .build()?,
        )
        .await?;

    println!("Issuing {} invoices...", INVOICES.len());
    for (id, customer, net_cents, vat_percent) in INVOICES {
        let event = EventEnvelope::from_json(
            "Invoice",
            id,
            1,
            "INVOICE_CREATED",
            json!({ "customer": customer, "net_cents": net_cents, "vat_percent": vat_percent }),
        );
        bus.publish(&[event]).await?;
    }
    // Two groups handle each invoice.
    for _ in 0..2 * INVOICES.len() {
        tokio::time::timeout(Duration::from_secs(10), done.recv())
            .await?
            .ok_or("a service stopped")?;
    }

    println!("\nLedger (gross, per customer):");
    for (customer, cents) in ledger.lock().expect("ledger").iter() {
        println!("  {customer}: {cents} cents");
    }
    println!("Tax due (per VAT rate):");
    for (rate, cents) in tax.lock().expect("tax").iter() {
        println!("  {rate}: {cents} cents");
    }
    println!("\nEvent log:");
    for event in bus.event_log() {
        println!(
            "  {} {} {} {}",
            event.occurred_at.format("%H:%M:%S%.3f"),
            event.event_type,
            event.aggregate_id,
            event.payload
        );
    }
    bus.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
