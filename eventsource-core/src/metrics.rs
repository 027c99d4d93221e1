//! OpenTelemetry metrics (feature `metrics`).
//!
//! Every bus records these through the global meter provider
//! (`opentelemetry::global::set_meter_provider`, which must be set before
//! the bus is created), with the attributes `messaging.system` (the
//! backend) and, for consumer metrics, `messaging.consumer.group.name`:
//!
//! | instrument | kind | unit | what |
//! |---|---|---|---|
//! | `eventsource.published` | counter | `{event}` | events accepted by `publish` |
//! | `eventsource.handled` | counter | `{event}` | handler calls that succeeded |
//! | `eventsource.failed_attempts` | counter | `{attempt}` | handler calls that failed |
//! | `eventsource.dead_lettered` | counter | `{event}` | messages moved to the dead-letter queue because they failed |
//! | `eventsource.parked` | counter | `{event}` | events parked in the dead-letter queue behind an earlier letter of their aggregate |
//! | `eventsource.replayed` | counter | `{event}` | dead letters replayed |
//! | `eventsource.handler.duration` | histogram | `s` | one handler call (attribute `outcome`: `ok` / `error`) |
//! | `eventsource.publish.duration` | histogram | `s` | one `publish` call, retries included |
//! | `eventsource.in_flight` | up-down counter | `{event}` | handlers running now |
//! | `eventsource.consumer.lag` | gauge | `{event}` | the group's backlog on the broker |
//! | `eventsource.dlq.depth` | gauge | `{event}` | the group's dead letters on the broker |
//! | `eventsource.consumer.members` | gauge | `{member}` | the group's members the broker knows |
//! | `eventsource.durability_risks` | counter | `{setting}` | broker settings found at connect that break the durability contract (attribute `setting`; see [`Durability`](crate::Durability)) |
//!
//! The last three are read from the broker by [`watch_groups`], which an
//! application (or a sidecar) runs for the groups it wants to see. A
//! Prometheus exporter (`opentelemetry-prometheus`) renders them as
//! `eventsource_handled_total`, `eventsource_handler_duration_seconds`, …;
//! `examples/metrics-prometheus` serves them on `/metrics`.

#[cfg(feature = "metrics")]
mod instruments {
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry::metrics::{Counter, Gauge, Histogram, UpDownCounter};
    use opentelemetry::KeyValue;
    use tokio_util::sync::CancellationToken;

    use crate::EventBus;

    const SYSTEM: &str = "messaging.system";
    const GROUP: &str = "messaging.consumer.group.name";

    /// The instruments one bus records to.
    #[derive(Debug)]
    pub(crate) struct Instruments {
        system: &'static str,
        published: Counter<u64>,
        handled: Counter<u64>,
        failed: Counter<u64>,
        dead_lettered: Counter<u64>,
        parked: Counter<u64>,
        replayed: Counter<u64>,
        handler_duration: Histogram<f64>,
        publish_duration: Histogram<f64>,
        in_flight: UpDownCounter<i64>,
    }

    impl Instruments {
        pub(crate) fn new(system: &'static str) -> Self {
            let meter = opentelemetry::global::meter("eventsource");
            let counter = |name: &'static str, unit: &'static str, what: &'static str| {
                meter
                    .u64_counter(name)
                    .with_unit(unit)
                    .with_description(what)
                    .build()
            };
            let seconds = |name: &'static str, what: &'static str| {
                meter
                    .f64_histogram(name)
                    .with_unit("s")
                    .with_description(what)
                    .build()
            };
            Instruments {
                system,
                published: counter(
                    "eventsource.published",
                    "{event}",
                    "Events accepted by publish",
                ),
                handled: counter(
                    "eventsource.handled",
                    "{event}",
                    "Handler calls that succeeded",
                ),
                failed: counter(
                    "eventsource.failed_attempts",
                    "{attempt}",
                    "Handler calls that failed",
                ),
                dead_lettered: counter(
                    "eventsource.dead_lettered",
                    "{event}",
                    "Messages moved to the dead-letter queue because they failed",
                ),
                parked: counter(
                    "eventsource.parked",
                    "{event}",
                    "Events parked in the dead-letter queue behind an earlier letter of their aggregate",
                ),
                replayed: counter("eventsource.replayed", "{event}", "Dead letters replayed"),
                handler_duration: seconds("eventsource.handler.duration", "One handler call"),
                publish_duration: seconds(
                    "eventsource.publish.duration",
                    "One publish call, retries included",
                ),
                in_flight: meter
                    .i64_up_down_counter("eventsource.in_flight")
                    .with_unit("{event}")
                    .with_description("Handlers running now")
                    .build(),
            }
        }

        fn system(&self) -> [KeyValue; 1] {
            [KeyValue::new(SYSTEM, self.system)]
        }

        fn group(&self, group: &str) -> [KeyValue; 2] {
            [
                KeyValue::new(SYSTEM, self.system),
                KeyValue::new(GROUP, group.to_owned()),
            ]
        }

        pub(crate) fn published(&self, n: u64, took: Duration) {
            self.published.add(n, &self.system());
            self.publish_duration
                .record(took.as_secs_f64(), &self.system());
        }

        pub(crate) fn handled(&self, group: &str) {
            self.handled.add(1, &self.group(group));
        }

        pub(crate) fn failed(&self, group: &str, n: u64) {
            if n > 0 {
                self.failed.add(n, &self.group(group));
            }
        }

        pub(crate) fn dead_lettered(&self, group: &str) {
            self.dead_lettered.add(1, &self.group(group));
        }

        pub(crate) fn parked(&self, group: &str) {
            self.parked.add(1, &self.group(group));
        }

        pub(crate) fn replayed(&self, group: &str) {
            self.replayed.add(1, &self.group(group));
        }

        pub(crate) fn handler_call(&self, group: &str, took: Duration, ok: bool) {
            let [system, group] = self.group(group);
            self.handler_duration.record(
                took.as_secs_f64(),
                &[
                    system,
                    group,
                    KeyValue::new("outcome", if ok { "ok" } else { "error" }),
                ],
            );
        }

        pub(crate) fn in_flight(&self, group: &str, delta: i64) {
            self.in_flight.add(delta, &self.group(group));
        }
    }

    /// Records `groups`' lag, dead-letter depth and members, read from the
    /// broker through [`EventBus::group_stats`], every `every` until `stop`
    /// is cancelled (and once at once). A group the broker does not know
    /// is skipped; a failed read is logged and tried again next time.
    ///
    /// ```no_run
    /// # async fn run(bus: std::sync::Arc<dyn eventsource_core::EventBus>) {
    /// use std::time::Duration;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// let stop = CancellationToken::new();
    /// tokio::spawn(eventsource_core::metrics::watch_groups(
    ///     bus,
    ///     vec!["billing".into(), "shipping".into()],
    ///     Duration::from_secs(15),
    ///     stop.clone(),
    /// ));
    /// # }
    /// ```
    pub async fn watch_groups(
        bus: Arc<dyn EventBus>,
        groups: Vec<String>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let meter = opentelemetry::global::meter("eventsource");
        let gauge = |name: &'static str, unit: &'static str, what: &'static str| -> Gauge<u64> {
            meter
                .u64_gauge(name)
                .with_unit(unit)
                .with_description(what)
                .build()
        };
        let lag = gauge(
            "eventsource.consumer.lag",
            "{event}",
            "The group's backlog on the broker",
        );
        let depth = gauge(
            "eventsource.dlq.depth",
            "{event}",
            "The group's dead letters on the broker",
        );
        let members = gauge(
            "eventsource.consumer.members",
            "{member}",
            "The group's members the broker knows",
        );
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            for group in &groups {
                match bus.group_stats(group).await {
                    Ok(Some(stats)) => {
                        let attrs = [
                            KeyValue::new(SYSTEM, bus.backend()),
                            KeyValue::new(GROUP, group.clone()),
                        ];
                        lag.record(stats.pending, &attrs);
                        depth.record(stats.dead_letters, &attrs);
                        members.record(stats.members as u64, &attrs);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(group, error = %e, "reading group stats for metrics"),
                }
            }
        }
    }
}

#[cfg(feature = "metrics")]
pub use instruments::watch_groups;
#[cfg(feature = "metrics")]
pub(crate) use instruments::Instruments;

/// Counts one setting found at connect that breaks the durability
/// contract (`eventsource.durability_risks`, attributes
/// `messaging.system` and `setting`); nothing without the `metrics`
/// feature.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn durability_risk(system: &'static str, setting: &str) {
    #[cfg(feature = "metrics")]
    opentelemetry::global::meter("eventsource")
        .u64_counter("eventsource.durability_risks")
        .with_unit("{setting}")
        .with_description("Broker settings found at connect that break the durability contract")
        .build()
        .add(
            1,
            &[
                opentelemetry::KeyValue::new("messaging.system", system),
                opentelemetry::KeyValue::new("setting", setting.to_owned()),
            ],
        );
}
