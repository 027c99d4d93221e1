//! Forgetting a person: crypto-shredding of personal data in events.
//!
//! An event declares which of its fields are personal data and whose
//! (the *data subject*, e.g. a user id): with the derive,
//! `#[personal_data]` on the fields and `#[data_subject]` on the field that
//! names the subject; by hand, by overriding
//! [`DomainEvent::personal_data`](crate::DomainEvent::personal_data).
//!
//! A [`Shredder`] encrypts those fields with the subject's own key
//! (AES-256-GCM, a key per subject in a [`KeyStore`]) when the envelope is
//! built, so every copy downstream — store rows, snapshots, outbox rows,
//! broker messages, dead and parked letters, replays — holds ciphertext.
//! [`Shredder::open`] decrypts a copy; [`Shredder::forget`] deletes the
//! subject's key, and from then on every copy opens with the fields'
//! replacement values: aggregates still load, projections rebuild, dead
//! letters replay.
//!
//! What travels: each encrypted field's value becomes the string
//! `"es:enc:1:<base64 of nonce and ciphertext>"`, and the header
//! [`PERSONAL_HEADER`] lists the subject, the encrypted fields (JSON
//! pointers into the payload) and each field's replacement value, as a
//! URL query (`s=user-7&p=/email&r=%22%22`). The
//! subject id itself stays readable: choose an opaque id (a user id), not
//! an e-mail address.
//!
//! Layout: `declaration.rs` (what an event declares), `cipher.rs` (one
//! value in and out of AES-GCM), `keys.rs` ([`KeyStore`], the in-memory
//! one), `shredder.rs` (sealing, opening, forgetting, the key cache),
//! `handler.rs` (a handler that sees opened events).

mod cipher;
mod declaration;
mod handler;
mod keys;
mod shredder;

pub use declaration::{PersonalData, PersonalField, PERSONAL_HEADER};
pub use handler::OpenedHandler;
pub use keys::{InMemoryKeyStore, KeyStore, SubjectKey, SubjectStatus};
pub(crate) use shredder::OpenRun;
pub use shredder::{SealedValue, Shredder, ShredderConfig, SUBJECT_FORGOTTEN};
