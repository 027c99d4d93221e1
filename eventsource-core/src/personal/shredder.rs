//! Sealing, opening and forgetting: the one place keys meet events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{cipher, KeyStore, PersonalData, PersonalField, SubjectKey, PERSONAL_HEADER};
use crate::{DomainEvent, Error, EventBus, EventEnvelope, Result};

/// The event type published by [`Shredder::forget`] (aggregate type
/// `DataSubject`, aggregate id = the subject), so projections can delete
/// the rows they keep of the subject.
pub const SUBJECT_FORGOTTEN: &str = "SubjectForgotten";

/// The aggregate type of [`SUBJECT_FORGOTTEN`] events.
const DATA_SUBJECT: &str = "DataSubject";

/// How a [`Shredder`] caches keys.
///
/// A key stays in the cache for at most `cache_ttl`: that is how long
/// *another* process may still open a subject's data after it is
/// forgotten (the process that forgets drops the key at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShredderConfig {
    /// How many subjects' keys are cached (default 10,000; at least 1).
    pub cache_capacity: usize,
    /// How long a cached key is used before it is read again (default
    /// 60 s; zero turns the cache off).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for ShredderConfig {
    fn default() -> Self {
        ShredderConfig {
            cache_capacity: 10_000,
            cache_ttl: Duration::from_secs(60),
        }
    }
}

impl ShredderConfig {
    /// Sets `cache_capacity`.
    #[must_use]
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// Sets `cache_ttl`.
    #[must_use]
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Checks the values, naming the field that is wrong.
    pub fn validated(self) -> Result<Self> {
        if self.cache_capacity == 0 {
            return Err(Error::config(
                "shredder: `cache_capacity` must be at least 1",
            ));
        }
        Ok(self)
    }
}

/// Encrypts the personal fields of events as their envelopes are built,
/// opens them again, and forgets subjects. See the [module](super).
///
/// ```
/// # use std::sync::Arc;
/// use eventsource_core::personal::{InMemoryKeyStore, PersonalData, PersonalField, Shredder};
/// use eventsource_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Registered { user: String, email: String }
/// impl DomainEvent for Registered {
///     const AGGREGATE_TYPE: &'static str = "User";
///     fn event_type(&self) -> &str { "Registered" }
///     fn personal_data(&self) -> Option<PersonalData> {
///         Some(PersonalData::new(&self.user)
///             .field(PersonalField::new("/email", serde_json::json!(""))))
///     }
/// }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let shredder = Shredder::new(Arc::new(InMemoryKeyStore::new()));
/// let event = Registered { user: "u-1".into(), email: "ada@example.com".into() };
/// let sealed = shredder.envelope("u-1", 1, &event).await?;
/// assert!(!sealed.payload.to_string().contains("ada@"));
/// let opened = shredder.open(&sealed).await?;
/// assert_eq!(opened.payload["email"], "ada@example.com");
///
/// shredder.forget("u-1", None).await?;
/// let opened = shredder.open(&sealed).await?;
/// assert_eq!(opened.payload["email"], "");
/// # Ok::<(), eventsource_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Shredder {
    keys: Arc<dyn KeyStore>,
    config: ShredderConfig,
    cache: Mutex<HashMap<String, (Option<SubjectKey>, Instant)>>,
    /// The last header written and read: an aggregate's events mostly
    /// carry the same one, so it is not serialized or parsed again.
    last_written: Mutex<Option<(PersonalData, Arc<str>)>>,
    last_read: Mutex<Option<(Arc<str>, Arc<PersonalData>)>>,
    /// The key last used, and since when it is cached: an aggregate's
    /// events mostly have one subject, so the map is not hashed for each.
    last_key: Mutex<Option<(String, Option<SubjectKey>, Instant)>>,
}

impl std::fmt::Debug for Shredder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shredder")
            .field("config", &self.config)
            .field("cached", &self.cache.lock().len())
            .finish_non_exhaustive()
    }
}

/// Whether a key is wanted to write (made when missing) or to read.
#[derive(Clone, Copy)]
enum Use {
    Seal,
    Open,
}

impl Shredder {
    /// A shredder over `keys` with the default cache.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self::build(keys, ShredderConfig::default())
    }

    /// A shredder over `keys` with `config` (validated).
    pub fn with_config(keys: Arc<dyn KeyStore>, config: ShredderConfig) -> Result<Self> {
        Ok(Self::build(keys, config.validated()?))
    }

    /// The one place the struct is built; `config` is valid.
    fn build(keys: Arc<dyn KeyStore>, config: ShredderConfig) -> Self {
        Shredder {
            keys,
            config,
            cache: Mutex::new(HashMap::new()),
            last_written: Mutex::new(None),
            last_read: Mutex::new(None),
            last_key: Mutex::new(None),
        }
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    async fn key(&self, subject: &str, use_: Use) -> Result<Option<SubjectKey>> {
        // A key found for reading is good for writing too; a miss on
        // reading is not (the subject may just be new).
        let fresh = |key: &Option<SubjectKey>, at: &Instant| {
            (key.is_some() || matches!(use_, Use::Open)) && at.elapsed() < self.config.cache_ttl
        };
        if let Some((last, key, at)) = self.last_key.lock().as_ref() {
            if last == subject && fresh(key, at) {
                return Ok(key.clone());
            }
        }
        let cached = self
            .cache
            .lock()
            .get(subject)
            .filter(|(key, at)| fresh(key, at))
            .cloned();
        if let Some((key, at)) = cached {
            *self.last_key.lock() = Some((subject.to_owned(), key.clone(), at));
            return Ok(key);
        }
        let key = match use_ {
            Use::Seal => self.keys.get_or_create(subject).await?,
            Use::Open => self.keys.get(subject).await?,
        };
        if !self.config.cache_ttl.is_zero() {
            let mut cache = self.cache.lock();
            if cache.len() >= self.config.cache_capacity && !cache.contains_key(subject) {
                // Drop the expired entries; if none, the oldest.
                let ttl = self.config.cache_ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
                if cache.len() >= self.config.cache_capacity {
                    if let Some(oldest) = cache
                        .iter()
                        .min_by_key(|(_, (_, at))| *at)
                        .map(|(s, _)| s.clone())
                    {
                        cache.remove(&oldest);
                    }
                }
            }
            let at = Instant::now();
            cache.insert(subject.to_owned(), (key.clone(), at));
            drop(cache);
            *self.last_key.lock() = Some((subject.to_owned(), key.clone(), at));
        }
        Ok(key)
    }

    /// Builds the envelope of `event` (as [`EventEnvelope::new`]) and seals
    /// the personal data it declares.
    pub async fn envelope<E: DomainEvent>(
        &self,
        aggregate_id: impl Into<String>,
        aggregate_version: u64,
        event: &E,
    ) -> Result<EventEnvelope> {
        let mut envelope = EventEnvelope::new(aggregate_id, aggregate_version, event)?;
        if let Some(declared) = event.personal_data() {
            self.seal(&mut envelope, &declared).await?;
        }
        Ok(envelope)
    }

    /// Encrypts the `declared` fields of `envelope`'s payload with the
    /// subject's key and lists them in the [`PERSONAL_HEADER`] header. A
    /// field absent from the payload, or `null`, is left as it is. For a
    /// forgotten subject the fields get their replacement values instead:
    /// nothing of a forgotten person is written again.
    pub async fn seal(&self, envelope: &mut EventEnvelope, declared: &PersonalData) -> Result<()> {
        if envelope.metadata.contains_key(PERSONAL_HEADER) {
            return Err(personal_err(envelope, "the event is sealed already"));
        }
        if declared.subject.is_empty() {
            return Err(personal_err(envelope, "its data subject is empty"));
        }
        let key = self.key(&declared.subject, Use::Seal).await?;
        let mut sealed = PersonalData::new(declared.subject.clone());
        sealed.fields.reserve(declared.fields.len());
        for field in &declared.fields {
            let Some(value) = field_mut(&mut envelope.payload, &field.pointer) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            match &key {
                Some(key) => {
                    let text = cipher::seal(
                        key,
                        &cipher::field_aad(&envelope.event_id, &field.pointer),
                        value,
                    )
                    .map_err(|reason| personal_err_id(&envelope.event_id, &reason))?;
                    *value = serde_json::Value::String(text);
                    sealed.fields.push(field.clone());
                }
                None => *value = field.replacement.clone(),
            }
        }
        if !sealed.fields.is_empty() {
            let header = self
                .header_text(&sealed)
                .map_err(|e| personal_err(envelope, &e))?;
            envelope
                .metadata
                .insert(PERSONAL_HEADER.to_owned(), header.as_ref().to_owned());
        }
        Ok(())
    }

    /// `sealed` as the header's text (the last one again if the same).
    fn header_text(&self, sealed: &PersonalData) -> std::result::Result<Arc<str>, String> {
        let mut last = self.last_written.lock();
        if let Some((declared, text)) = last.as_ref() {
            if declared == sealed {
                return Ok(Arc::clone(text));
            }
        }
        let text: Arc<str> = sealed.to_header()?.into();
        *last = Some((sealed.clone(), Arc::clone(&text)));
        Ok(text)
    }

    /// The envelope's header, parsed (the last one again if the same).
    fn read_header(&self, envelope: &EventEnvelope) -> Result<Option<Arc<PersonalData>>> {
        let Some(text) = envelope.metadata.get(PERSONAL_HEADER) else {
            return Ok(None);
        };
        if let Some((last, declared)) = self.last_read.lock().as_ref() {
            if last.as_ref() == text.as_str() {
                return Ok(Some(Arc::clone(declared)));
            }
        }
        let declared = Arc::new(parse_header(envelope, text)?);
        *self.last_read.lock() = Some((text.as_str().into(), Arc::clone(&declared)));
        Ok(Some(declared))
    }

    /// The subject whose data `envelope` holds encrypted, if any (read
    /// from its header without a key).
    pub fn subject_of(envelope: &EventEnvelope) -> Result<Option<String>> {
        Ok(header(envelope)?.map(|d| d.subject))
    }

    /// A copy of `envelope` with its personal fields decrypted, or set to
    /// their replacement values when the subject is forgotten (a missing
    /// key is never an error). The copy has no [`PERSONAL_HEADER`]: never
    /// publish or store it. An envelope without the header is returned as
    /// it is.
    ///
    /// Fails with [`Error::PersonalData`] when the header is not
    /// readable or a field does not decrypt (changed in transit, or
    /// moved from another event).
    pub async fn open(&self, envelope: &EventEnvelope) -> Result<EventEnvelope> {
        let mut opened = envelope.clone();
        self.open_in_place(&mut opened).await?;
        Ok(opened)
    }

    /// [`open`](Self::open) without the copy; returns the subject whose
    /// data it opened, if any.
    pub async fn open_in_place(&self, envelope: &mut EventEnvelope) -> Result<Option<String>> {
        Ok(self
            .open_fields(envelope)
            .await?
            .map(|declared| declared.subject.clone()))
    }

    /// [`open_in_place`](Self::open_in_place), giving what the header
    /// declared: the subject is not copied.
    pub(crate) async fn open_fields(
        &self,
        envelope: &mut EventEnvelope,
    ) -> Result<Option<Arc<PersonalData>>> {
        let Some(declared) = self.read_header(envelope)? else {
            return Ok(None);
        };
        let key = self.key(&declared.subject, Use::Open).await?;
        open_declared(envelope, &declared, key.as_ref())?;
        Ok(Some(declared))
    }

    /// Opens `envelope` as one of a run of events (one aggregate's
    /// load), giving the subject whose data it opened. The run keeps
    /// the last header and key between events, so an aggregate's events,
    /// which mostly share both, take no lock and read no clock each; a
    /// run is short, and uses the key it started with.
    pub(crate) async fn open_in_run<'r>(
        &self,
        envelope: &mut EventEnvelope,
        run: &'r mut OpenRun,
    ) -> Result<Option<&'r str>> {
        let Some(text) = envelope.metadata.get(PERSONAL_HEADER) else {
            return Ok(None);
        };
        if !matches!(&run.header, Some((last, _)) if last == text) {
            let declared = Arc::new(parse_header(envelope, text)?);
            let subject_changed = !matches!(
                &run.header, Some((_, last)) if last.subject == declared.subject
            );
            run.header = Some((text.clone(), declared));
            if subject_changed {
                run.key = None;
            }
        }
        let Some((_, declared)) = &run.header else {
            return Ok(None);
        };
        if run.key.is_none() {
            run.key = Some(self.key(&declared.subject, Use::Open).await?);
        }
        let key = run.key.as_ref().and_then(Option::as_ref);
        open_declared(envelope, declared, key)?;
        Ok(Some(&declared.subject))
    }

    /// Seals a whole value (an aggregate's snapshot) for every subject in
    /// `subjects`, one layer per subject, bound to `context` (e.g. the
    /// stream): forgetting any one of them makes it unreadable. `None`
    /// when one of them is forgotten already (keep no such copy).
    pub async fn seal_value<'a>(
        &self,
        subjects: impl IntoIterator<Item = &'a String>,
        context: &str,
        value: &serde_json::Value,
    ) -> Result<Option<SealedValue>> {
        let mut sealed = SealedValue {
            subjects: Vec::new(),
            data: value.clone(),
        };
        for subject in subjects {
            let Some(key) = self.key(subject, Use::Seal).await? else {
                return Ok(None);
            };
            let text = cipher::seal(&key, &value_aad(context, subject), &sealed.data).map_err(
                |reason| Error::PersonalData {
                    event_id: context.to_owned(),
                    reason,
                },
            )?;
            sealed.data = serde_json::Value::String(text);
            sealed.subjects.push(subject.clone());
        }
        Ok(Some(sealed))
    }

    /// Opens what [`seal_value`](Self::seal_value) made; `None` when one of
    /// its subjects is forgotten.
    pub async fn open_value(
        &self,
        sealed: &SealedValue,
        context: &str,
    ) -> Result<Option<serde_json::Value>> {
        let mut data = sealed.data.clone();
        for subject in sealed.subjects.iter().rev() {
            let Some(key) = self.key(subject, Use::Open).await? else {
                return Ok(None);
            };
            let text = data.as_str().ok_or_else(|| Error::PersonalData {
                event_id: context.to_owned(),
                reason: "a sealed layer is not text".into(),
            })?;
            data = cipher::open(&key, &value_aad(context, subject), text).map_err(|reason| {
                Error::PersonalData {
                    event_id: context.to_owned(),
                    reason,
                }
            })?;
        }
        Ok(Some(data))
    }

    /// Forgets `subject`: deletes its key (recording when), drops it from
    /// this shredder's cache, and — given a bus — publishes a
    /// [`SUBJECT_FORGOTTEN`] event (payload `{"subject", "forgotten_at"}`)
    /// so projections can delete their own rows. Returns when the subject
    /// was first forgotten; forgetting again publishes again.
    pub async fn forget(&self, subject: &str, bus: Option<&dyn EventBus>) -> Result<DateTime<Utc>> {
        if subject.is_empty() {
            return Err(Error::config("forget: the subject is empty"));
        }
        let at = self.keys.forget(subject).await?;
        self.cache.lock().remove(subject);
        *self.last_key.lock() = None;
        if let Some(bus) = bus {
            bus.publish(&[forgotten_event(subject, at)]).await?;
        }
        tracing::info!(subject, forgotten_at = %at, "forgot a data subject");
        Ok(at)
    }
}

/// A value sealed for one or more subjects by [`Shredder::seal_value`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedValue {
    /// The subjects, in the order their layers were applied.
    pub subjects: Vec<String>,
    /// The value inside its layers (the value itself when `subjects` is
    /// empty).
    pub data: serde_json::Value,
}

fn value_aad(context: &str, subject: &str) -> Vec<u8> {
    format!("value\0{context}\0{subject}").into_bytes()
}

/// The [`SUBJECT_FORGOTTEN`] event for `subject`.
fn forgotten_event(subject: &str, at: DateTime<Utc>) -> EventEnvelope {
    EventEnvelope::from_json(
        DATA_SUBJECT,
        subject,
        1,
        SUBJECT_FORGOTTEN,
        serde_json::json!({ "subject": subject, "forgotten_at": at }),
    )
}

/// The header's declaration, if the envelope has one.
fn header(envelope: &EventEnvelope) -> Result<Option<PersonalData>> {
    envelope
        .metadata
        .get(PERSONAL_HEADER)
        .map(|text| parse_header(envelope, text))
        .transpose()
}

/// The value `pointer` (RFC 6901) names in `value`, as
/// `Value::pointer_mut` finds it. A pointer without escapes (`~0`, `~1`)
/// is walked without copying its tokens: `pointer_mut` allocates two
/// strings per token, a fifth of opening a field.
fn field_mut<'v>(
    value: &'v mut serde_json::Value,
    pointer: &str,
) -> Option<&'v mut serde_json::Value> {
    if pointer.contains('~') {
        return value.pointer_mut(pointer);
    }
    if pointer.is_empty() {
        return Some(value);
    }
    let mut at = value;
    for token in pointer.strip_prefix('/')?.split('/') {
        at = match at {
            serde_json::Value::Object(map) => map.get_mut(token)?,
            serde_json::Value::Array(items) => items.get_mut(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

fn parse_header(envelope: &EventEnvelope, text: &str) -> Result<PersonalData> {
    PersonalData::from_header(text).map_err(|e| {
        personal_err(
            envelope,
            &format!("its `{PERSONAL_HEADER}` header is not readable: {e}"),
        )
    })
}

/// Decrypts the `declared` fields of `envelope` with `key`, or sets them
/// to their replacement values when there is none (forgotten), and
/// takes the header off.
fn open_declared(
    envelope: &mut EventEnvelope,
    declared: &PersonalData,
    key: Option<&SubjectKey>,
) -> Result<()> {
    let event_id = envelope.event_id;
    for PersonalField {
        pointer,
        replacement,
    } in &declared.fields
    {
        let Some(value) = field_mut(&mut envelope.payload, pointer) else {
            return Err(personal_err_id(
                &event_id,
                &format!("the encrypted field `{pointer}` is missing from the payload"),
            ));
        };
        *value = match key {
            None => replacement.clone(),
            Some(key) => {
                let text = value.as_str().ok_or_else(|| {
                    personal_err_id(
                        &event_id,
                        &format!("the encrypted field `{pointer}` is not text"),
                    )
                })?;
                cipher::open(key, &cipher::field_aad(&event_id, pointer), text).map_err(
                    |reason| personal_err_id(&event_id, &format!("field `{pointer}`: {reason}")),
                )?
            }
        };
    }
    envelope.metadata.remove(PERSONAL_HEADER);
    Ok(())
}

/// What [`Shredder::open_in_run`] keeps between the events of one run.
#[derive(Default)]
pub(crate) struct OpenRun {
    /// The last header's text and what it declares.
    header: Option<(String, Arc<PersonalData>)>,
    /// The key of that header's subject, once looked up (`Some(None)`:
    /// forgotten).
    key: Option<Option<SubjectKey>>,
}

fn personal_err(envelope: &EventEnvelope, reason: &str) -> Error {
    personal_err_id(&envelope.event_id, reason)
}

fn personal_err_id(event_id: &uuid::Uuid, reason: &str) -> Error {
    Error::PersonalData {
        event_id: event_id.to_string(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_field_is_found_as_pointer_mut_finds_it() {
        let doc = serde_json::json!({
            "a": {"b": [10, {"c": "x"}], "": 1, "d~e/f": 2},
            "list": [0, 1, 2],
        });
        for pointer in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/",
            "/a/d~0e~1f",
            "/list/2",
            "/list/02",
            "/list/+1",
            "/list/-1",
            "/list/3",
            "/list/",
            "/a/b/x",
            "a",
            "/missing",
            "/a/b/1/c/z",
        ] {
            let (mut mine, mut theirs) = (doc.clone(), doc.clone());
            assert_eq!(
                super::field_mut(&mut mine, pointer).cloned(),
                theirs.pointer_mut(pointer).cloned(),
                "{pointer:?}"
            );
        }
    }
}
