//! Spans as a test sees them: each span's name and fields, captured by a
//! `tracing` layer.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One span: its name and its fields (recorded later ones included), as
/// strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedSpan {
    /// The span's `tracing` name.
    pub name: String,
    /// Field name → value (`Display` of strings, `Debug` of the rest).
    pub fields: BTreeMap<String, String>,
}

impl CapturedSpan {
    /// The value of `field`, if set.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

/// A layer that keeps every span it sees; clone it to read them.
///
/// ```
/// use eventsource_testkit::SpanCapture;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let capture = SpanCapture::default();
/// let subscriber = tracing_subscriber::registry().with(capture.clone());
/// tracing::subscriber::with_default(subscriber, || {
///     let _span = tracing::info_span!("work", size = 3).entered();
/// });
/// assert_eq!(capture.named("work")[0].field("size"), Some("3"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpanCapture {
    spans: Arc<Mutex<Vec<Seen>>>,
}

/// A span and its id while it is open (`None` once closed: ids are reused).
type Seen = (Option<Id>, CapturedSpan);

impl SpanCapture {
    /// The spans named `name`, in the order they were created.
    pub fn named(&self, name: &str) -> Vec<CapturedSpan> {
        self.spans
            .lock()
            .expect("capture lock")
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanCapture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut span = CapturedSpan {
            name: attrs.metadata().name().to_owned(),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.spans
            .lock()
            .expect("capture lock")
            .push((Some(id.clone()), span));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.spans.lock().expect("capture lock");
        // The latest span with this id (ids are reused after a span closes).
        if let Some((_, span)) = spans.iter_mut().rev().find(|(i, _)| i.as_ref() == Some(id)) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut spans = self.spans.lock().expect("capture lock");
        if let Some((i, _)) = spans
            .iter_mut()
            .rev()
            .find(|(i, _)| i.as_ref() == Some(&id))
        {
            *i = None;
        }
    }
}
