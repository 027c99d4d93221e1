//! Which events a subscription receives.

use serde::{Deserialize, Serialize};

use crate::{Error, EventEnvelope, Result};

/// Selects the events a subscription receives.
///
/// Patterns are AMQP topic patterns matched against the routing key
/// `{aggregate_type}.{event_type}`: words are separated by `.`, `*` matches
/// exactly one word and `#` matches zero or more words. RabbitMQ turns a
/// filter into queue bindings ([`binding_keys`](Self::binding_keys)); the
/// other backends match it client-side with [`matches`](Self::matches).
///
/// ```
/// use eventsource_core::EventFilter;
///
/// let f = EventFilter::patterns(["user.*", "#.completed"])?;
/// assert!(f.matches_key("user.registered"));
/// assert!(f.matches_key("order.payment.completed"));
/// assert!(!f.matches_key("order.placed"));
/// # Ok::<(), eventsource_core::Error>(())
/// ```
///
/// Built with [`all`](Self::all) (the default), [`event_type`](Self::event_type),
/// [`event_types`](Self::event_types), [`aggregate_type`](Self::aggregate_type)
/// or [`patterns`](Self::patterns); its rule is private so that kinds of
/// filter may be added. As JSON it is `{"kind": "patterns", "value": [..]}`
/// (`"all"` has no value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventFilter(Rule);

/// What a filter selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
enum Rule {
    /// Every event.
    #[default]
    All,
    /// Events whose `event_type` is one of these.
    EventTypes(Vec<String>),
    /// Events whose `aggregate_type` is this one.
    AggregateType(String),
    /// Events whose routing key matches one of these AMQP-style patterns.
    Patterns(Vec<String>),
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        EventFilter(Rule::All)
    }

    /// Events of exactly one event type.
    pub fn event_type(event_type: impl Into<String>) -> Self {
        EventFilter(Rule::EventTypes(vec![event_type.into()]))
    }

    /// Events of any of these event types.
    pub fn event_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EventFilter(Rule::EventTypes(
            types.into_iter().map(Into::into).collect(),
        ))
    }

    /// Events of one aggregate type.
    pub fn aggregate_type(aggregate_type: impl Into<String>) -> Self {
        EventFilter(Rule::AggregateType(aggregate_type.into()))
    }

    /// Events whose routing key matches `pattern`; the pattern is validated.
    pub fn pattern(pattern: impl Into<String>) -> Result<Self> {
        Self::patterns([pattern])
    }

    /// Events whose routing key matches any of `patterns`; each is validated.
    pub fn patterns<I, S>(patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        let filter = EventFilter(Rule::Patterns(patterns));
        filter.validate()?;
        Ok(filter)
    }

    /// Checks the filter is usable: no empty lists, names or pattern words.
    pub fn validate(&self) -> Result<()> {
        match &self.0 {
            Rule::All => Ok(()),
            Rule::EventTypes(types) => {
                if types.is_empty() || types.iter().any(|t| t.trim().is_empty()) {
                    return Err(Error::config(
                        "event type filter needs at least one non-empty event type",
                    ));
                }
                Ok(())
            }
            Rule::AggregateType(t) => {
                if t.trim().is_empty() {
                    return Err(Error::config("aggregate type filter must not be empty"));
                }
                Ok(())
            }
            Rule::Patterns(patterns) => {
                if patterns.is_empty() {
                    return Err(Error::config("pattern filter needs at least one pattern"));
                }
                for p in patterns {
                    if p.is_empty()
                        || p.split('.')
                            .any(|w| w.is_empty() || w.contains(char::is_whitespace))
                    {
                        return Err(Error::config(format!(
                            "invalid pattern `{p}`: use words separated by `.`, with `*` for one word and `#` for any number"
                        )));
                    }
                    if p.split('.')
                        .any(|w| w != "*" && w != "#" && (w.contains('*') || w.contains('#')))
                    {
                        return Err(Error::config(format!(
                            "invalid pattern `{p}`: `*` and `#` must stand alone as a whole word"
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether `envelope` passes this filter.
    pub fn matches(&self, envelope: &EventEnvelope) -> bool {
        match &self.0 {
            Rule::All => true,
            Rule::EventTypes(types) => types.contains(&envelope.event_type),
            Rule::AggregateType(t) => *t == envelope.aggregate_type,
            Rule::Patterns(_) => self.matches_key(&envelope.routing_key()),
        }
    }

    /// Whether a routing key `{aggregate_type}.{event_type}` passes this filter.
    pub fn matches_key(&self, routing_key: &str) -> bool {
        match &self.0 {
            Rule::All => true,
            Rule::EventTypes(types) => types.iter().any(|t| {
                routing_key
                    .strip_suffix(t.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
            }),
            Rule::AggregateType(t) => routing_key
                .strip_prefix(t.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
            Rule::Patterns(patterns) => {
                let key: Vec<&str> = routing_key.split('.').collect();
                patterns.iter().any(|p| {
                    let pat: Vec<&str> = p.split('.').collect();
                    topic_match(&pat, &key)
                })
            }
        }
    }

    /// One spelling per filter, whatever the order of its lists: the form
    /// backends store to check that a group's members agree
    /// ([`Error::GroupFilterConflict`]).
    ///
    /// ```
    /// use eventsource_core::EventFilter;
    /// let a = EventFilter::patterns(["b.*", "a.#"])?;
    /// let b = EventFilter::patterns(["a.#", "b.*", "a.#"])?;
    /// assert_eq!(a.canonical(), b.canonical());
    /// assert_eq!(a.canonical(), "patterns [a.#, b.*]");
    /// # Ok::<(), eventsource_core::Error>(())
    /// ```
    pub fn canonical(&self) -> String {
        fn list(items: &[String]) -> String {
            let set: std::collections::BTreeSet<&str> = items.iter().map(String::as_str).collect();
            set.into_iter().collect::<Vec<_>>().join(", ")
        }
        match &self.0 {
            Rule::All => "all".to_owned(),
            Rule::EventTypes(t) => format!("event types [{}]", list(t)),
            Rule::AggregateType(t) => format!("aggregate type {t}"),
            Rule::Patterns(p) => format!("patterns [{}]", list(p)),
        }
    }

    /// The AMQP binding keys that deliver exactly what this filter matches.
    pub fn binding_keys(&self) -> Vec<String> {
        match &self.0 {
            Rule::All => vec!["#".to_owned()],
            Rule::EventTypes(types) => types.iter().map(|t| format!("#.{t}")).collect(),
            Rule::AggregateType(t) => vec![format!("{t}.#")],
            Rule::Patterns(p) => p.clone(),
        }
    }

    /// The routing keys it lists, when it is [`patterns`](Self::patterns)
    /// without a wildcard: exact keys, what a direct exchange can route.
    pub fn exact_keys(&self) -> Option<&[String]> {
        match &self.0 {
            Rule::Patterns(p)
                if p.iter()
                    .all(|k| !k.split('.').any(|w| w == "*" || w == "#")) =>
            {
                Some(p)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for EventFilter {
    /// The [`canonical`](Self::canonical) form, in backquotes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.canonical())
    }
}

/// AMQP topic matching: `*` is one word, `#` zero or more.
fn topic_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| topic_match(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((k, key_rest)) => (word == "*" || word == *k) && topic_match(rest, key_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pattern: &str) -> EventFilter {
        EventFilter::pattern(pattern).expect("valid pattern")
    }

    #[test]
    fn amqp_patterns_match_like_rabbitmq() {
        assert!(p("user.*").matches_key("user.registered"));
        assert!(!p("user.*").matches_key("user.profile.updated"));
        assert!(p("user.#").matches_key("user.profile.updated"));
        assert!(p("user.#").matches_key("user"));
        assert!(p("*.registered").matches_key("user.registered"));
        assert!(!p("*.registered").matches_key("user.deregistered"));
        assert!(p("#.completed").matches_key("order.payment.completed"));
        assert!(p("#.completed").matches_key("completed"));
        assert!(p("#").matches_key("anything.at.all"));
        assert!(p("Order.#.Shipped").matches_key("Order.Shipped"));
        assert!(!p("Order.*").matches_key("Invoice.Created"));
    }

    #[test]
    fn type_filters_match_on_word_boundaries() {
        let f = EventFilter::event_types(["Created", "Deleted"]);
        assert!(f.matches_key("Order.Created"));
        assert!(!f.matches_key("Order.PreCreated"));
        let f = EventFilter::aggregate_type("Order");
        assert!(f.matches_key("Order.Created"));
        assert!(!f.matches_key("OrderLine.Created"));
    }

    #[test]
    fn bad_patterns_are_typed_errors() {
        for bad in ["", "a..b", "a.b*", "#x", "a. b"] {
            let err = EventFilter::pattern(bad).expect_err(bad);
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
        }
        assert!(EventFilter(Rule::EventTypes(vec![])).validate().is_err());
        assert!(EventFilter::aggregate_type(" ").validate().is_err());
    }

    #[test]
    fn binding_keys_agree_with_client_side_matching() {
        let filters = [
            EventFilter::all(),
            EventFilter::event_types(["Created"]),
            EventFilter::aggregate_type("Order"),
            p("*.Created"),
        ];
        let keys = [
            "Order.Created",
            "Order.Shipped",
            "User.Created",
            "Order.line.Created",
        ];
        for f in &filters {
            let via_bindings = EventFilter::patterns(f.binding_keys()).expect("valid bindings");
            for k in keys {
                assert_eq!(
                    f.matches_key(k),
                    via_bindings.matches_key(k),
                    "{f:?} on {k}"
                );
            }
        }
    }

    #[test]
    fn json_keeps_the_kind_and_value_shape() {
        let f = EventFilter::patterns(["Order.*"]).expect("valid");
        let json = serde_json::to_value(&f).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"kind": "patterns", "value": ["Order.*"]})
        );
        let all = serde_json::to_value(EventFilter::all()).expect("serializes");
        assert_eq!(all, serde_json::json!({"kind": "all"}));
        for f in [f, EventFilter::all(), EventFilter::aggregate_type("Order")] {
            let back: EventFilter =
                serde_json::from_value(serde_json::to_value(&f).unwrap()).expect("reads back");
            assert_eq!(back, f);
        }
    }

    #[test]
    fn only_patterns_without_wildcards_are_exact_keys() {
        let exact = EventFilter::patterns(["Order.Placed", "Order.Paid"]).expect("valid");
        assert_eq!(
            exact.exact_keys(),
            Some(&["Order.Placed".to_owned(), "Order.Paid".to_owned()][..])
        );
        for f in [
            EventFilter::pattern("Order.*").expect("valid"),
            EventFilter::patterns(["Order.Placed", "#.Paid"]).expect("valid"),
            EventFilter::event_type("Placed"),
            EventFilter::all(),
        ] {
            assert_eq!(f.exact_keys(), None, "{f:?}");
        }
    }
}
