//! docs.rs builds every crate with features with all of them, so the
//! broker backends appear in the facade's documentation, each item marked
//! with the feature it needs.

fn manifest(krate: &str) -> toml::Table {
    let path = format!("{}/../{krate}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn crates_with_features_build_on_docs_rs_with_all_of_them() {
    for krate in ["eventsource", "eventsource-core", "eventsource-store"] {
        let m = manifest(krate);
        assert!(m.contains_key("features"), "{krate} has features");
        let docs_rs = m["package"]
            .get("metadata")
            .and_then(|m| m.get("docs")?.get("rs"))
            .unwrap_or_else(|| panic!("{krate}: no [package.metadata.docs.rs]"));
        assert_eq!(
            docs_rs.get("all-features").and_then(toml::Value::as_bool),
            Some(true),
            "{krate}"
        );
        let args: Vec<&str> = docs_rs
            .get("rustdoc-args")
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(args, ["--cfg", "docsrs"], "{krate}");
        let lib = std::fs::read_to_string(format!(
            "{}/../{krate}/src/lib.rs",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("lib.rs");
        assert!(
            lib.contains("#![cfg_attr(docsrs, feature(doc_cfg))]"),
            "{krate}: items are marked with their feature on docs.rs"
        );
    }
}
