//! One JSON value in and out of AES-256-GCM: the text form a field takes
//! while its subject is remembered.

use std::sync::LazyLock;

use base64::engine::general_purpose::NO_PAD;
use base64::engine::Simd;
use base64::Engine as _;
use rand::RngCore as _;
use ring::aead::{Aad, Nonce, Tag, NONCE_LEN};

use super::SubjectKey;

/// What an encrypted field's text starts with (version 1 of the form).
pub(crate) const PREFIX: &str = "es:enc:1:";

/// Standard base64 without padding, with AVX2 or NEON where the CPU has
/// it: decoding a field's 100-odd characters took 1,100 instructions
/// byte by byte (the same text as the scalar engine's, which it falls
/// back to).
static B64: LazyLock<Simd> = LazyLock::new(|| Simd::standard(NO_PAD));

/// The length of AES-GCM's authentication tag.
const TAG_LEN: usize = 16;

/// The associated data of a field binds its ciphertext to its event and
/// pointer, so a value copied into another event or field does not decrypt.
pub(crate) fn field_aad(event_id: &uuid::Uuid, pointer: &str) -> FieldAad {
    let len = 16 + pointer.len();
    if len <= SHORT_AAD {
        let mut short = [0; SHORT_AAD];
        short[..16].copy_from_slice(event_id.as_bytes());
        short[16..len].copy_from_slice(pointer.as_bytes());
        FieldAad::Short(short, len)
    } else {
        let mut long = Vec::with_capacity(len);
        long.extend_from_slice(event_id.as_bytes());
        long.extend_from_slice(pointer.as_bytes());
        FieldAad::Long(long)
    }
}

/// How long a field's associated data may be and still be kept on the
/// stack (an event id and a pointer of up to 112 bytes).
const SHORT_AAD: usize = 128;

/// A field's associated data (see [`field_aad`]): on the stack when it is
/// short, so opening a field allocates only its value.
pub(crate) enum FieldAad {
    /// The first `.1` bytes hold it.
    Short([u8; SHORT_AAD], usize),
    /// Longer than [`SHORT_AAD`].
    Long(Vec<u8>),
}

impl std::ops::Deref for FieldAad {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FieldAad::Short(bytes, len) => &bytes[..*len],
            FieldAad::Long(bytes) => bytes,
        }
    }
}

/// How long a field's ciphertext may be and still be decoded on the stack.
const SHORT_FIELD: usize = 256;

/// Encrypts `value` (its JSON text) bound to `aad`:
/// `es:enc:1:` + base64(nonce ‖ ciphertext ‖ tag).
pub(crate) fn seal(
    key: &SubjectKey,
    aad: &[u8],
    value: &serde_json::Value,
) -> Result<String, String> {
    // A random 96-bit nonce from the thread's CSPRNG (ChaCha, seeded and
    // reseeded from the OS): a system call per field cost 0.38 µs.
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    // nonce ‖ plaintext, encrypted where it lies, then the tag.
    let mut bytes = Vec::with_capacity(NONCE_LEN + 64 + TAG_LEN);
    bytes.extend_from_slice(&nonce);
    serde_json::to_writer(&mut bytes, value).map_err(|e| e.to_string())?;
    let tag = key
        .cipher()
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut bytes[NONCE_LEN..],
        )
        .map_err(|_| "encryption failed".to_owned())?;
    bytes.extend_from_slice(tag.as_ref());
    let mut text = String::with_capacity(PREFIX.len() + bytes.len() * 4 / 3 + 4);
    text.push_str(PREFIX);
    B64.encode_string(&bytes, &mut text);
    Ok(text)
}

/// Decrypts what [`seal`] made. Fails (never panics) on text that is not
/// in the form, was changed, or was sealed with another key or for
/// another event or field.
pub(crate) fn open(key: &SubjectKey, aad: &[u8], text: &str) -> Result<serde_json::Value, String> {
    let encoded = text
        .strip_prefix(PREFIX)
        .ok_or_else(|| format!("the field is not in the `{PREFIX}…` form"))?;
    let damaged = |e: &dyn std::fmt::Display| format!("the field's base64 is damaged: {e}");
    // Decoded on the stack when it fits: most fields are short.
    let mut short = [0u8; SHORT_FIELD];
    let mut long: Vec<u8>;
    let bytes: &mut [u8] = if encoded.len() / 4 * 3 + 3 <= SHORT_FIELD {
        let n = B64
            .decode_slice(encoded, &mut short)
            .map_err(|e| damaged(&e))?;
        &mut short[..n]
    } else {
        long = B64.decode(encoded).map_err(|e| damaged(&e))?;
        &mut long
    };
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err("the field's ciphertext is too short".into());
    }
    // Decrypted where it lies: no second buffer for the plaintext.
    let (nonce, rest) = bytes.split_at_mut(NONCE_LEN);
    let (plain, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "a bad nonce".to_owned())?;
    let tag = Tag::try_from(&*tag).map_err(|_| "a bad tag".to_owned())?;
    let plain = key
        .cipher()
        .open_in_place_separate_tag(nonce, Aad::from(aad), tag, plain, 0..)
        .map_err(|_| {
            "the field does not decrypt with its subject's key (changed, or moved from another event or field)"
                .to_owned()
        })?;
    if let Some(text) = plain_string(plain) {
        return Ok(serde_json::Value::String(text.to_owned()));
    }
    serde_json::from_slice(plain).map_err(|e| format!("the decrypted field is not JSON: {e}"))
}

/// The text of `json` when it is a string without escapes (most personal
/// fields: a name, an e-mail address), read without the JSON parser,
/// which cost three times as much; `None` for anything else.
fn plain_string(json: &[u8]) -> Option<&str> {
    let inner = json.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // A fold without an early exit: the compiler turns it into vector
    // compares (a short-circuiting `any` went byte by byte).
    let escaped = inner.iter().fold(false, |seen, &b| {
        seen | (b == b'"') | (b == b'\\') | (b < 0x20)
    });
    if escaped {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_value_round_trips_and_each_seal_differs() {
        let key = SubjectKey::generate();
        let id = uuid::Uuid::now_v7();
        let value = json!({"street": "1 Canary Row", "zip": 12345});
        let a = seal(&key, &field_aad(&id, "/address"), &value).expect("seal");
        let b = seal(&key, &field_aad(&id, "/address"), &value).expect("seal");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(a.starts_with(PREFIX) && !a.contains("Canary"), "{a}");
        assert_eq!(
            open(&key, &field_aad(&id, "/address"), &a).expect("open"),
            value
        );
    }

    #[test]
    fn a_field_sealed_by_the_earlier_cipher_crate_still_opens() {
        // Sealed by RustCrypto's aes-gcm 0.10 (used before ring): key
        // [7; 32], nonce [3; 12], this event id and pointer.
        let key = SubjectKey::from_bytes([7; 32]);
        let id = uuid::Uuid::parse_str("01930000-0000-7000-8000-00000000002a").expect("id");
        let sealed = "es:enc:1:AwMDAwMDAwMDAwMDB5/HYhpNJiMXMC85xTSQYc91HES5wthGHBRJ0XcDYq0T";
        assert_eq!(
            open(&key, &field_aad(&id, "/email"), sealed).expect("open"),
            json!("ada@example.com")
        );
    }

    #[test]
    fn a_string_reads_as_the_json_parser_reads_it() {
        for json in [
            r#""ada@example.com""#,
            r#""""#,
            r#""Zoë 🦀""#,
            r#""a \"quoted\" \\ name\n""#,
            r#""\u00e9""#,
            "\"tab\there\"",
            r#"""#,
            r#""a"b""#,
            r#"17"#,
            r#"{"a":"b"}"#,
        ] {
            let parsed = serde_json::from_str::<serde_json::Value>(json).ok();
            let fast = plain_string(json.as_bytes()).map(|s| serde_json::Value::String(s.into()));
            if let Some(fast) = fast {
                assert_eq!(Some(fast), parsed, "{json}");
            }
        }
        assert_eq!(plain_string(br#""ada""#), Some("ada"));
        assert_eq!(plain_string(b"\"\xff\""), None, "not UTF-8");
    }

    #[test]
    fn long_values_and_pointers_round_trip_beyond_the_stack_buffers() {
        let key = SubjectKey::generate();
        let id = uuid::Uuid::now_v7();
        let long_pointer = format!("/{}", "p".repeat(SHORT_AAD));
        for (pointer, value) in [
            ("/a", json!("x".repeat(SHORT_FIELD))),
            (long_pointer.as_str(), json!("short")),
            (
                long_pointer.as_str(),
                json!({"list": vec!["y".repeat(40); 20]}),
            ),
        ] {
            let sealed = seal(&key, &field_aad(&id, pointer), &value).expect("seal");
            assert_eq!(
                open(&key, &field_aad(&id, pointer), &sealed).expect("open"),
                value
            );
            let other = format!("{pointer}x");
            assert!(open(&key, &field_aad(&id, &other), &sealed).is_err());
        }
        let pointer = "/".repeat(SHORT_AAD - 16);
        assert_eq!(field_aad(&id, &pointer).len(), SHORT_AAD);
        assert_eq!(&field_aad(&id, &pointer)[..16], id.as_bytes());
    }

    #[test]
    fn the_vector_base64_engine_reads_and_writes_what_the_scalar_one_does() {
        use base64::engine::general_purpose::STANDARD_NO_PAD as SCALAR;
        // Every length around the vector paths' thresholds (64 to decode,
        // 128 to encode), bytes covering the whole alphabet, `+` and `/`.
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 67 + len) as u8).collect();
            let text = SCALAR.encode(&bytes);
            assert_eq!(B64.encode(&bytes), text, "encoding {len} bytes");
            assert_eq!(B64.decode(&text).expect("decode"), bytes, "{len} bytes");
            if text.len() > 70 {
                // A character no base64 holds, deep inside the vector part.
                let mut damaged = text.clone().into_bytes();
                damaged[40] = b'*';
                let damaged = String::from_utf8(damaged).expect("ascii");
                assert!(B64.decode(&damaged).is_err(), "{len} bytes: {damaged}");
            }
        }
    }

    #[test]
    fn a_value_does_not_open_elsewhere_or_changed() {
        let key = SubjectKey::generate();
        let id = uuid::Uuid::now_v7();
        let sealed =
            seal(&key, &field_aad(&id, "/email"), &json!("ada@example.com")).expect("seal");
        let other_key = SubjectKey::generate();
        assert!(open(&other_key, &field_aad(&id, "/email"), &sealed).is_err());
        assert!(open(&key, &field_aad(&uuid::Uuid::now_v7(), "/email"), &sealed).is_err());
        assert!(open(&key, &field_aad(&id, "/name"), &sealed).is_err());
        let mut changed = sealed.clone().into_bytes();
        let last = changed.len() - 3;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).expect("ascii");
        assert!(open(&key, &field_aad(&id, "/email"), &changed).is_err());
        assert!(open(&key, &field_aad(&id, "/email"), "plain text").is_err());
        assert!(open(&key, &field_aad(&id, "/email"), "es:enc:1:!!").is_err());
        assert!(open(&key, &field_aad(&id, "/email"), "es:enc:1:AAAA").is_err());
    }
}
