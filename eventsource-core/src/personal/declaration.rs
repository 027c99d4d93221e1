//! What an event declares about its personal data, and the header that
//! says what was encrypted.

use serde::{Deserialize, Serialize};

/// The envelope header that lists what a [`Shredder`](super::Shredder)
/// encrypted: the subject, and each field's pointer and replacement. Its
/// value is a [`PersonalData`] as compact JSON (`{"s": subject, "f":
/// [{"p": pointer, "r": replacement}]}`: it travels with every copy, and
/// reading longer rows was most of what loading sealed events cost).
pub const PERSONAL_HEADER: &str = "es-personal";

/// The personal data in one event: whose it is and where it lies.
///
/// Returned by [`DomainEvent::personal_data`](crate::DomainEvent::personal_data);
/// the derive builds it from `#[personal_data]` and `#[data_subject]`.
///
/// ```
/// use eventsource_core::personal::{PersonalData, PersonalField};
///
/// let declared = PersonalData::new("user-7")
///     .field(PersonalField::new("/email", serde_json::json!("")))
///     .field(PersonalField::new("/address/street", serde_json::json!("forgotten")));
/// assert_eq!(declared.subject, "user-7");
/// assert_eq!(declared.fields.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalData {
    /// Whose data it is: the key the fields are encrypted with.
    #[serde(rename = "s")]
    pub subject: String,
    /// The personal fields.
    #[serde(rename = "f")]
    pub fields: Vec<PersonalField>,
}

impl PersonalData {
    /// Personal data of `subject`, with no fields yet.
    pub fn new(subject: impl Into<String>) -> Self {
        PersonalData {
            subject: subject.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field.
    #[must_use]
    pub fn field(mut self, field: PersonalField) -> Self {
        self.fields.push(field);
        self
    }
}

/// One personal field: where it is in the serialized payload, and what it
/// reads as once its subject is forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalField {
    /// A JSON pointer (RFC 6901) into the payload, e.g. `/email`.
    #[serde(rename = "p")]
    pub pointer: String,
    /// The value the field takes after its subject is forgotten: it must
    /// deserialize as the field's type (the derive uses the type's
    /// `Default` unless `replacement = "…"` is given).
    #[serde(rename = "r")]
    pub replacement: serde_json::Value,
}

impl PersonalField {
    /// A field at `pointer`, read as `replacement` once forgotten.
    pub fn new(pointer: impl Into<String>, replacement: serde_json::Value) -> Self {
        PersonalField {
            pointer: pointer.into(),
            replacement,
        }
    }
}
