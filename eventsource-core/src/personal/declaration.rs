//! What an event declares about its personal data, and the header that
//! says what was encrypted.

use std::fmt::Write as _;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

/// The envelope header that lists what a [`Shredder`](super::Shredder)
/// encrypted: the subject, and each field's pointer and replacement.
///
/// Its value is a URL query: `s=<subject>&p=<pointer>&r=<replacement>`,
/// one `p`/`r` pair per field, each part percent-encoded (UTF-8), the
/// replacement as JSON text; e.g. `s=user-7&p=/email&r=%22%22`. Any URL
/// library reads it. It holds no `"` or `\`, so the metadata it travels
/// in (a JSON object in every store row and message) needs no escapes:
/// escaped quotes made reading a sealed row a quarter dearer.
///
/// Headers written before this form, a JSON object (`{"s": subject, "f":
/// [{"p": pointer, "r": replacement}]}`), are still read.
pub const PERSONAL_HEADER: &str = "es-personal";

/// What a header part keeps as it is: URL-unreserved characters and `/`
/// (every pointer starts with one). The rest, `%`, `&`, `=`, `+`, `"`,
/// `\` and all non-ASCII bytes among them, is percent-encoded.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

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

    /// The [`PERSONAL_HEADER`] text of this declaration.
    pub(crate) fn to_header(&self) -> Result<String, String> {
        let mut text = String::with_capacity(16 + self.subject.len() + 32 * self.fields.len());
        let _ = write!(text, "s={}", utf8_percent_encode(&self.subject, KEPT));
        for field in &self.fields {
            let replacement =
                serde_json::to_string(&field.replacement).map_err(|e| e.to_string())?;
            let _ = write!(
                text,
                "&p={}&r={}",
                utf8_percent_encode(&field.pointer, KEPT),
                utf8_percent_encode(&replacement, KEPT)
            );
        }
        Ok(text)
    }

    /// A declaration from its [`PERSONAL_HEADER`] text, in either form;
    /// the reason when it is not one.
    pub(crate) fn from_header(text: &str) -> Result<Self, String> {
        if text.starts_with('{') {
            return serde_json::from_str(text).map_err(|e| e.to_string());
        }
        if text.is_empty() {
            return Err("it is empty".into());
        }
        let mut parts = text.split('&').map(|part| {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not `name=value`"))?;
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|e| format!("`{name}` is not UTF-8 once decoded: {e}"))?;
            Ok::<_, String>((name, value.into_owned()))
        });
        let subject = match parts.next().transpose()? {
            Some(("s", subject)) => subject,
            _ => return Err("it does not start with the subject (`s=`)".into()),
        };
        let mut declared = PersonalData::new(subject);
        while let Some((name, pointer)) = parts.next().transpose()? {
            if name != "p" {
                return Err(format!(
                    "`{name}=` is not a part this version knows (`p=` expected)"
                ));
            }
            let replacement = match parts.next().transpose()? {
                Some(("r", json)) => serde_json::from_str(&json)
                    .map_err(|e| format!("the replacement of `{pointer}` is not JSON: {e}"))?,
                _ => return Err(format!("the field `{pointer}` has no replacement (`r=`)")),
            };
            declared
                .fields
                .push(PersonalField::new(pointer, replacement));
        }
        Ok(declared)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_header_round_trips_and_needs_no_json_escapes() {
        let declared = PersonalData::new("user 7&s=x/ü\"%+")
            .field(PersonalField::new("/email", json!("")))
            .field(PersonalField::new("/a~1b/0", json!({"k": "v & w=\"q\""})))
            .field(PersonalField::new("/n", json!(null)));
        let text = declared.to_header().expect("header");
        assert!(
            !text.contains(['"', '\\', '+', ' ']) && text.is_ascii(),
            "{text}"
        );
        assert_eq!(
            serde_json::to_string(&text).expect("json").len(),
            text.len() + 2,
            "no escapes in the metadata"
        );
        assert_eq!(PersonalData::from_header(&text).expect("read"), declared);
        assert_eq!(
            PersonalData::new("user-7")
                .field(PersonalField::new("/email", json!("")))
                .to_header()
                .expect("header"),
            "s=user-7&p=/email&r=%22%22"
        );
    }

    #[test]
    fn the_earlier_json_header_is_still_read() {
        let declared =
            PersonalData::from_header(r#"{"s":"u-1","f":[{"p":"/email","r":""}]}"#).expect("read");
        assert_eq!(
            declared,
            PersonalData::new("u-1").field(PersonalField::new("/email", json!("")))
        );
    }

    #[test]
    fn a_damaged_header_is_a_reason_not_a_panic() {
        for (text, says) in [
            ("", "empty"),
            ("p=/email&r=%22%22", "subject"),
            ("s=u&p=/email", "no replacement"),
            ("s=u&p=/email&x=1", "no replacement"),
            ("s=u&p=/email&r=nope", "not JSON"),
            ("s=u&k=2&p=/email&r=0", "`k=`"),
            ("s=u&p", "not `name=value`"),
            ("s=%FF", "UTF-8"),
            ("{\"s\":", "EOF"),
        ] {
            let reason = PersonalData::from_header(text).expect_err(text);
            assert!(reason.contains(says), "{text}: {reason}");
        }
    }
}
