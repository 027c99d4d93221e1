//! Forgetting a person in the SQL store (#29): subject keys in the
//! database, and no personal data in the clear in any table — events,
//! outbox, snapshots — read raw from the SQLite file and from `pg_dump`.

mod common;

use std::sync::Arc;

use common::TestDb;
use eventsource_core::personal::{KeyStore, Shredder, SubjectStatus};
use eventsource_core::{Aggregate, DomainEvent, RecordedEvent, Repository};
use eventsource_store::{
    CatchUpRunner, Checkpoints, OpenedProjection, ProjectionHandler, SnapshotPolicy,
    SnapshotRepository, SqlKeyStore,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Patient")]
#[serde(tag = "type")]
enum PatientEvent {
    Noted {
        #[data_subject]
        patient: String,
        #[personal_data(replacement = "[forgotten]")]
        note: String,
        seq: u32,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Patient {
    notes: Vec<String>,
}

impl Aggregate for Patient {
    type Event = PatientEvent;
    type Command = (String, String, u32);
    type Error = std::convert::Infallible;
    fn apply(&mut self, e: &PatientEvent) {
        let PatientEvent::Noted { note, .. } = e;
        self.notes.push(note.clone());
    }
    fn handle(
        &self,
        (patient, note, seq): Self::Command,
    ) -> Result<Vec<PatientEvent>, Self::Error> {
        Ok(vec![PatientEvent::Noted { patient, note, seq }])
    }
}

/// Every byte the database keeps of its tables: the SQLite file (and its
/// write-ahead log), or a `pg_dump` of the test database.
fn raw_bytes(db: &TestDb) -> Vec<u8> {
    match db.name() {
        None => {
            let path = db.url.trim_start_matches("sqlite://");
            let mut bytes = std::fs::read(path).expect("read the SQLite file");
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            bytes
        }
        Some(_) => {
            let out = std::process::Command::new("pg_dump")
                .arg(&db.url)
                .output()
                .expect("pg_dump is installed with PostgreSQL (apt-get install postgresql-client)");
            assert!(
                out.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn keys_are_made_once_and_forgetting_sticks(db: &TestDb) {
    let store = db.store(false).await;
    let keys = Arc::new(SqlKeyStore::new(&store));
    assert_eq!(
        keys.status("s").await.expect("status"),
        SubjectStatus::Unknown
    );
    // Ten writers race to make the first key of one subject: one key.
    let made = futures::future::join_all((0..10).map(|_| {
        let keys = keys.clone();
        async move {
            keys.get_or_create("s")
                .await
                .expect("key")
                .expect("not forgotten")
        }
    }))
    .await;
    let first = made[0].to_base64();
    assert!(made.iter().all(|k| k.to_base64() == first));
    assert!(matches!(
        keys.status("s").await.expect("status"),
        SubjectStatus::Remembered { .. }
    ));
    let at = keys.forget("s").await.expect("forget");
    assert_eq!(
        keys.forget("s").await.expect("again"),
        at,
        "the first time is kept"
    );
    // Another connection (another process) sees it forgotten.
    let again = SqlKeyStore::new(&db.store(false).await);
    assert!(again.get("s").await.expect("get").is_none());
    assert!(again.get_or_create("s").await.expect("get").is_none());
    assert_eq!(
        again.status("s").await.expect("status"),
        SubjectStatus::Forgotten { at }
    );
    // Forgetting a subject never seen records it too.
    keys.forget("never-seen").await.expect("forget unknown");
    assert!(keys
        .get_or_create("never-seen")
        .await
        .expect("get")
        .is_none());
    let listed = keys.subjects().await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        !contains(&raw_bytes(db), &first),
        "the forgotten key is gone from disk"
    );
}

async fn no_table_holds_personal_data_in_the_clear(db: &TestDb) {
    let store = db.store(true).await;
    let shredder = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
    let repo = Repository::<Patient>::new(Arc::new(store.clone())).with_shredder(shredder.clone());
    let snapshots = SnapshotRepository::new(
        repo.clone(),
        store.clone(),
        SnapshotPolicy::every(10, 1).expect("policy"),
    );
    for patient in ["s", "t"] {
        for seq in 0..25 {
            let mut root = snapshots.load(patient).await.expect("load");
            root.execute((
                patient.to_owned(),
                format!("canary-{patient}-{seq:03}"),
                seq,
            ))
            .expect("decide");
            snapshots.save(&mut root).await.expect("save");
        }
    }
    assert_eq!(
        snapshots.snapshot_version("s").await.expect("snap"),
        Some(20)
    );
    let raw = raw_bytes(db);
    for patient in ["s", "t"] {
        for seq in 0..25 {
            let canary = format!("canary-{patient}-{seq:03}");
            assert!(!contains(&raw, &canary), "`{canary}` in the clear");
        }
    }
    assert!(contains(&raw, "es:enc:1:"), "the scan reads the events");
    let loaded = snapshots.load("s").await.expect("load");
    assert_eq!(loaded.state().notes[24], "canary-s-024");

    shredder.forget("s", None).await.expect("forget");
    let s = snapshots
        .load("s")
        .await
        .expect("a forgotten patient loads");
    assert_eq!(
        s.state().notes.len(),
        25,
        "from events: the snapshot no longer opens"
    );
    assert!(s.state().notes.iter().all(|n| n == "[forgotten]"));
    let t = snapshots.load("t").await.expect("t loads");
    assert_eq!(t.state().notes[3], "canary-t-003");
    // Saving again after forgetting stores no snapshot of `s`.
    let mut root = s;
    root.execute(("s".into(), "canary-s-late".into(), 99))
        .expect("decide");
    snapshots.save(&mut root).await.expect("save");
    assert!(!contains(&raw_bytes(db), "canary-s-late"));
}

/// The notes a projection keeps, per patient.
#[derive(Default)]
struct NotesView(std::sync::Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl ProjectionHandler for NotesView {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), eventsource_core::BoxError> {
        let e = &event.envelope;
        let note = e.payload["note"].as_str().unwrap_or_default().to_owned();
        self.0
            .lock()
            .expect("lock")
            .push((e.aggregate_id.clone(), note));
        Ok(())
    }
}

async fn a_projection_rebuilt_after_forgetting_holds_no_data_of_the_subject(db: &TestDb) {
    let store = db.store(false).await;
    let shredder = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
    let repo = Repository::<Patient>::new(Arc::new(store.clone())).with_shredder(shredder.clone());
    for patient in ["s", "t"] {
        for seq in 0..3 {
            repo.execute(
                patient,
                (patient.to_owned(), format!("canary-{patient}-{seq}"), seq),
            )
            .await
            .expect("save");
        }
    }
    let rebuild = |name: &'static str| {
        let (store, shredder) = (store.clone(), shredder.clone());
        async move {
            let view = Arc::new(NotesView::default());
            CatchUpRunner::new(
                name,
                Arc::new(store.clone()),
                Checkpoints::new(store),
                Arc::new(OpenedProjection::new(shredder, view.clone())),
            )
            .catch_up()
            .await
            .expect("catch up");
            let notes = view.0.lock().expect("lock").clone();
            notes
        }
    };
    let before = rebuild("notes-v1").await;
    assert!(
        before.contains(&("s".into(), "canary-s-2".into())),
        "{before:?}"
    );
    shredder.forget("s", None).await.expect("forget");
    let after = rebuild("notes-v2").await;
    assert_eq!(after.len(), 6);
    for (patient, note) in &after {
        match patient.as_str() {
            "s" => assert_eq!(note, "[forgotten]"),
            _ => assert!(note.starts_with("canary-t-"), "{note}"),
        }
    }
}

on_both_databases!(
    keys_are_made_once_and_forgetting_sticks,
    no_table_holds_personal_data_in_the_clear,
    a_projection_rebuilt_after_forgetting_holds_no_data_of_the_subject,
);
