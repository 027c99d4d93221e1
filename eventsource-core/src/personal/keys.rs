//! Subject keys and where they are kept.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::rand::SecureRandom as _;

use crate::{Error, Result};

/// One data subject's AES-256-GCM key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SubjectKey {
    bytes: [u8; 32],
    cipher: Arc<LessSafeKey>,
}

impl SubjectKey {
    /// A new random key (from the operating system's generator).
    ///
    /// # Panics
    ///
    /// When the operating system gives no random bytes (ring's
    /// `SystemRandom` fails only where there is no entropy source at all).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random generator failed");
        Self::from_bytes(bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // 32 bytes is AES-256's key length: `new` cannot fail.
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte AES-256 key");
        SubjectKey {
            cipher: Arc::new(LessSafeKey::new(key)),
            bytes,
        }
    }

    /// The key as base64 text, for a [`KeyStore`] that keeps text.
    pub fn to_base64(&self) -> String {
        B64.encode(self.bytes)
    }

    /// A key from [`to_base64`](Self::to_base64)'s text; a typed error
    /// (never a panic) on anything else.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| Error::config(format!("a subject key is not base64: {e}")))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            Error::config(format!("a subject key has {} bytes, not 32", b.len()))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    pub(crate) fn cipher(&self) -> &LessSafeKey {
        &self.cipher
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(<redacted>)")
    }
}

/// What a [`KeyStore`] knows about a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectStatus {
    /// No key was ever made for the subject, and it was never forgotten.
    Unknown,
    /// The subject has a key, made at `since`.
    Remembered {
        /// When the key was made.
        since: DateTime<Utc>,
    },
    /// The subject's key was deleted at `at`.
    Forgotten {
        /// When it was forgotten.
        at: DateTime<Utc>,
    },
}

/// Where subject keys live. The SQL one is `eventsource_store::SqlKeyStore`
/// (SQLite and PostgreSQL); [`InMemoryKeyStore`] is for tests.
///
/// A forgotten subject stays forgotten: [`get_or_create`](Self::get_or_create)
/// gives `None` for it, and a [`Shredder`](super::Shredder) then writes the
/// replacement values instead of the data, so nothing of the subject is
/// stored again by mistake.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The subject's key, made and kept when it has none; `None` when the
    /// subject was forgotten. Two callers racing for a new subject get the
    /// same key.
    async fn get_or_create(&self, subject: &str) -> Result<Option<SubjectKey>>;

    /// The subject's key; `None` when it was forgotten or never had one.
    async fn get(&self, subject: &str) -> Result<Option<SubjectKey>>;

    /// Deletes the subject's key and records when. Forgetting again keeps
    /// the first time, which it returns.
    async fn forget(&self, subject: &str) -> Result<DateTime<Utc>>;

    /// What the store knows about the subject.
    async fn status(&self, subject: &str) -> Result<SubjectStatus>;
}

enum Entry {
    Key(SubjectKey, DateTime<Utc>),
    Forgotten(DateTime<Utc>),
}

/// A [`KeyStore`] in memory: for tests and examples (keys die with the
/// process, and with them the data).
#[derive(Default)]
pub struct InMemoryKeyStore {
    entries: Mutex<HashMap<String, Entry>>,
}

impl InMemoryKeyStore {
    /// An empty key store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for InMemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKeyStore")
            .field("subjects", &self.entries.lock().len())
            .finish()
    }
}

#[async_trait]
impl KeyStore for InMemoryKeyStore {
    async fn get_or_create(&self, subject: &str) -> Result<Option<SubjectKey>> {
        let mut entries = self.entries.lock();
        let entry = entries
            .entry(subject.to_owned())
            .or_insert_with(|| Entry::Key(SubjectKey::generate(), Utc::now()));
        Ok(match entry {
            Entry::Key(key, _) => Some(key.clone()),
            Entry::Forgotten(_) => None,
        })
    }

    async fn get(&self, subject: &str) -> Result<Option<SubjectKey>> {
        Ok(match self.entries.lock().get(subject) {
            Some(Entry::Key(key, _)) => Some(key.clone()),
            _ => None,
        })
    }

    async fn forget(&self, subject: &str) -> Result<DateTime<Utc>> {
        let mut entries = self.entries.lock();
        if let Some(Entry::Forgotten(at)) = entries.get(subject) {
            return Ok(*at);
        }
        let at = Utc::now();
        entries.insert(subject.to_owned(), Entry::Forgotten(at));
        Ok(at)
    }

    async fn status(&self, subject: &str) -> Result<SubjectStatus> {
        Ok(match self.entries.lock().get(subject) {
            None => SubjectStatus::Unknown,
            Some(Entry::Key(_, since)) => SubjectStatus::Remembered { since: *since },
            Some(Entry::Forgotten(at)) => SubjectStatus::Forgotten { at: *at },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_as_text_and_never_shows_in_debug() {
        let key = SubjectKey::generate();
        let text = key.to_base64();
        assert_eq!(
            SubjectKey::from_base64(&text).expect("parse").bytes,
            key.bytes
        );
        assert!(!format!("{key:?}").contains(&text));
        assert!(SubjectKey::from_base64("not base64!").is_err());
        assert!(SubjectKey::from_base64("AAAA").is_err());
    }

    #[tokio::test]
    async fn a_forgotten_subject_stays_forgotten() {
        let keys = InMemoryKeyStore::new();
        assert_eq!(
            keys.status("s").await.expect("status"),
            SubjectStatus::Unknown
        );
        assert!(keys.get("s").await.expect("get").is_none());
        let k = keys.get_or_create("s").await.expect("create").expect("key");
        let again = keys.get_or_create("s").await.expect("again").expect("key");
        assert_eq!(k.bytes, again.bytes);
        let at = keys.forget("s").await.expect("forget");
        assert_eq!(keys.forget("s").await.expect("forget again"), at);
        assert!(keys.get_or_create("s").await.expect("after").is_none());
        assert!(keys.get("s").await.expect("get").is_none());
        assert_eq!(
            keys.status("s").await.expect("status"),
            SubjectStatus::Forgotten { at }
        );
    }
}
