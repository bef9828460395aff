//! Store behaviour. Every scenario runs unchanged on SQLite and on PostgreSQL (a fresh database
//! per test, when `STEWARD_TEST_DATABASE_URL` is set), which proves the schema and the
//! queries portable.

use crate::{
    AgentRecord, CommitOutcome, EventRecord, Store, StoreError, StoreOptions, WorkspaceRecord,
    Write,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{AnyConnection, Connection, Executor};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::{
    Cause, Cycle, Failure, FailureReason, Generation, MachineState, Phase, ReadyWhen,
    ScheduledRetry, StepFailure, Switch, SwitchStage, Timestamp, WorkspaceId, WorkspaceSpec,
};
use tempfile::TempDir;

/// Each scenario becomes `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    if let Some(db) = super::TestDb::postgres().await {
                        super::$scenario(&db).await;
                        db.drop_database().await;
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    placeholders_are_numbered,
    a_workspace_round_trips,
    secrets_are_encrypted_at_rest,
    a_fenced_commit_changes_nothing_and_spares_its_batch,
    events_are_listed_in_order_after_a_seq,
    events_of_interleaved_workspaces_are_read_from_any_seq,
    commits_of_events_alone_are_grouped_and_keep_their_order,
    events_recorded_before_the_append_order_migration_are_kept,
    a_database_of_the_previous_schema_is_converted,
    deleting_a_workspace_removes_everything_of_it,
    reopening_keeps_everything,
    concurrent_commits_are_grouped_and_all_succeed,
    enqueued_commits_apply_in_order_and_overload_is_refused,
    one_batch_of_many_commits_keeps_each_commits_fences_and_atomicity,
    fenced_verdicts_in_a_grouped_batch_match_one_by_one,
    a_stale_commit_in_a_round_is_fenced_alone,
    a_large_batch_is_applied_in_rounds_of_one_commit_per_workspace,
    bare_idempotency_digests_are_erased_on_upgrade,
);

/// `$N` placeholders are bound by number, not by position, on both backends.
async fn placeholders_are_numbered(db: &TestDb) {
    let store = db.open().await;
    let joined: String = sqlx::query_scalar("SELECT $2 || $1")
        .bind("a")
        .bind("b")
        .fetch_one(&store.inner.pool)
        .await
        .expect("query");
    assert_eq!(joined, "ba");
    store.close().await;
}

async fn a_workspace_round_trips(db: &TestDb) {
    let store = db.open().await;
    let full = workspace();
    let bare = bare_workspace();
    let insert_full = Write::InsertWorkspace {
        record: Box::new(full.clone()),
        idempotency: Some(("key-1".into(), "hash-1".into())),
    };
    commit(&store, vec![insert_full, insert(&bare)]).await;

    assert_same(&load(&store, full.id).await, &full);
    assert_same(&load(&store, bare.id).await, &bare);
    let all = store.load_all().await.expect("load all");
    assert_eq!(all.len(), 2);
    for record in &all {
        assert_same(record, if record.id == full.id { &full } else { &bare });
    }
    assert_eq!(
        store.idempotency("key-1").await.expect("idempotency"),
        Some((full.id, "hash-1".to_owned()))
    );
    assert_eq!(store.idempotency("key-2").await.expect("idempotency"), None);
    assert!(store
        .load(WorkspaceId::from(uuid::Uuid::new_v4()))
        .await
        .expect("load")
        .is_none());

    // Configuration, secrets and agent change.
    let mut changed = full.clone();
    changed.spec.model = Some("large".into());
    changed.spec.command = None;
    changed.spec.env.insert("EXTRA".into(), "1".into());
    changed.secrets.remove("DB_PASSWORD");
    changed.secrets.insert("API_KEY".into(), secret("rotated"));
    changed.secrets.insert("NEW".into(), secret("fresh"));
    changed.agent.url = Some("http://127.0.0.1:2".into());
    commit(
        &store,
        vec![
            Write::SaveSpec {
                id: full.id,
                expected_generation: full.state.generation,
                spec: changed.spec.clone(),
            },
            Write::DeleteSecret {
                id: full.id,
                key: "DB_PASSWORD".into(),
            },
            Write::DeleteSecret {
                id: full.id,
                key: "NEVER_SET".into(),
            },
            put_secret(full.id, "API_KEY", "rotated"),
            put_secret(full.id, "NEW", "fresh"),
            Write::SaveAgent {
                id: full.id,
                agent: changed.agent.clone(),
            },
        ],
    )
    .await;
    assert_same(&load(&store, full.id).await, &changed);

    // A second create with the same idempotency key is refused and leaves nothing behind.
    let other = bare_workspace();
    let duplicate = Write::InsertWorkspace {
        record: Box::new(other.clone()),
        idempotency: Some(("key-1".into(), "hash-2".into())),
    };
    let refused = store.commit(vec![duplicate]).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(store.load(other.id).await.expect("load").is_none());
    store.close().await;
}

async fn secrets_are_encrypted_at_rest(db: &TestDb) {
    let store = db.open().await;
    let record = workspace();
    commit(&store, vec![insert(&record)]).await;

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key, ciphertext FROM secrets WHERE workspace_id = $1")
            .bind(record.id.to_string())
            .fetch_all(&store.inner.pool)
            .await
            .expect("raw rows");
    assert_eq!(rows.len(), record.secrets.len());
    for (key, ciphertext) in &rows {
        let plain = record.secrets[key].expose_secret();
        assert!(!ciphertext.contains(plain), "{key} is stored in plaintext");
    }

    // A ciphertext moved to another row does not decrypt there.
    sqlx::query(
        "UPDATE secrets SET ciphertext = \
         (SELECT ciphertext FROM secrets WHERE workspace_id = $1 AND key = 'API_KEY') \
         WHERE workspace_id = $1 AND key = 'DB_PASSWORD'",
    )
    .bind(record.id.to_string())
    .execute(&store.inner.pool)
    .await
    .expect("swap ciphertexts");
    let moved = store.load(record.id).await;
    assert!(matches!(moved, Err(StoreError::Crypto(_))), "{moved:?}");
    store.close().await;
}

async fn a_fenced_commit_changes_nothing_and_spares_its_batch(db: &TestDb) {
    let store = db.open().await;
    let record = workspace(); // generation 3
    commit(&store, vec![insert(&record)]).await;
    let mut next = record.state.clone();
    next.generation = Generation(4);
    next.phase = Phase::Provisioning;

    // Two requests in one batch: a stale writer (expects generation 2) and a current one.
    let stale = vec![
        Write::AppendEvent(event(record.id, 1, "stale")),
        save_state(record.id, Generation(2), next.clone()),
    ];
    let current = vec![
        Write::AppendEvent(event(record.id, 1, "current")),
        save_state(record.id, Generation(3), next.clone()),
    ];
    let batches = store.inner.counters.batches.load(Ordering::Relaxed);
    let (stale, current) = tokio::join!(store.commit(stale), store.commit(current));
    assert_eq!(
        store.inner.counters.batches.load(Ordering::Relaxed),
        batches + 1
    );
    assert_eq!(
        stale.expect("stale"),
        CommitOutcome::Fenced {
            id: record.id,
            expected: Generation(2)
        }
    );
    assert_eq!(current.expect("current"), CommitOutcome::Committed);
    let loaded = load(&store, record.id).await;
    assert_eq!(loaded.state, next);
    let events = store.events(record.id, 0, 10).await.expect("events");
    assert_eq!(kinds(&events), ["current"]);

    // The agent channel is fenced on the workspace's generation too.
    let mut agent = record.agent.clone(); // generation 3, now stale
    agent.url = Some("http://stale".into());
    let outcome = store
        .commit(vec![Write::SaveAgent {
            id: record.id,
            agent: agent.clone(),
        }])
        .await
        .expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome::Fenced {
            id: record.id,
            expected: Generation(3)
        }
    );
    assert_eq!(load(&store, record.id).await.agent, record.agent);
    agent.generation = Generation(4);
    commit(
        &store,
        vec![Write::SaveAgent {
            id: record.id,
            agent: agent.clone(),
        }],
    )
    .await;
    assert_eq!(load(&store, record.id).await.agent, agent);

    // So is the configuration (a provider switch records the new provider with it).
    let mut spec = record.spec.clone();
    spec.provider = "elsewhere".into();
    for (expected, outcome) in [
        (
            Generation(3),
            CommitOutcome::Fenced {
                id: record.id,
                expected: Generation(3),
            },
        ),
        (Generation(4), CommitOutcome::Committed),
    ] {
        let written = store
            .commit(vec![Write::SaveSpec {
                id: record.id,
                expected_generation: expected,
                spec: spec.clone(),
            }])
            .await
            .expect("commit");
        assert_eq!(written, outcome);
    }
    assert_eq!(load(&store, record.id).await.spec, spec);
    store.close().await;
}

async fn events_are_listed_in_order_after_a_seq(db: &TestDb) {
    let store = db.open().await;
    let record = bare_workspace();
    let mut writes = vec![insert(&record)];
    writes
        .extend((1..=5).map(|seq| Write::AppendEvent(event(record.id, seq, "provision_started"))));
    commit(&store, writes).await;

    let all = store.events(record.id, 0, 100).await.expect("events");
    assert_eq!(
        all,
        (1..=5)
            .map(|seq| event(record.id, seq, "provision_started"))
            .collect::<Vec<_>>()
    );
    let page = store.events(record.id, 2, 2).await.expect("events");
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(store
        .events(record.id, 5, 10)
        .await
        .expect("events")
        .is_empty());
    assert!(store
        .events(record.id, 0, -1)
        .await
        .expect("events")
        .is_empty());
    assert_eq!(load(&store, record.id).await.last_event_seq, 5);
    assert_eq!(
        store.load_all().await.expect("load all")[0].last_event_seq,
        5
    );

    // A failed request in a batch fails alone.
    let batches = store.inner.counters.batches.load(Ordering::Relaxed);
    let (duplicate, next) = tokio::join!(
        store.commit(vec![
            Write::AppendEvent(event(record.id, 6, "first")),
            Write::AppendEvent(event(record.id, 5, "duplicate")),
        ]),
        store.commit(vec![Write::AppendEvent(event(record.id, 6, "second"))]),
    );
    assert_eq!(
        store.inner.counters.batches.load(Ordering::Relaxed),
        batches + 1
    );
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    assert_eq!(next.expect("next"), CommitOutcome::Committed);
    let last = store.events(record.id, 5, 10).await.expect("events");
    assert_eq!(kinds(&last), ["second"]);
    store.close().await;
}

/// Commits of events alone (a probe round records a dropped health report for every
/// workspace in a cycle, a thousand such commits at once) go the grouped way, with the
/// outcomes one by one gives: each event after the last one stored, or the commit fails alone.
async fn commits_of_events_alone_are_grouped_and_keep_their_order(db: &TestDb) {
    let store = db.open().await;
    let (a, b, c) = (workspace(), workspace(), workspace());
    commit(&store, vec![insert(&a), insert(&b), insert(&c)]).await;
    let alone = || store.inner.counters.applied.alone.load(Ordering::Relaxed);
    let retried = || store.inner.counters.applied.retried.load(Ordering::Relaxed);
    let (slow, redone) = (alone(), retried());
    let events = |w: &WorkspaceRecord, seq, kind| vec![Write::AppendEvent(event(w.id, seq, kind))];

    // Interleaved, one commit across two workspaces (applied alone), and events after a
    // fenced write.
    let done = one_batch(
        &store,
        vec![
            events(&a, 1, "a1"),
            events(&b, 1, "b1"),
            events(&a, 2, "a2"),
            vec![
                Write::AppendEvent(event(b.id, 2, "b2")),
                Write::AppendEvent(event(c.id, 1, "c1")),
            ],
            events(&c, 2, "c2"),
            vec![
                save_state(c.id, c.state.generation, c.state.clone()),
                Write::AppendEvent(event(c.id, 3, "c3")),
            ],
        ],
    )
    .await;
    assert!(done
        .iter()
        .all(|outcome| matches!(outcome, Ok(CommitOutcome::Committed))));
    assert_eq!((alone(), retried()), (slow + 1, redone), "grouped");
    for (w, expected) in [
        (&a, vec!["a1", "a2"]),
        (&b, vec!["b1", "b2"]),
        (&c, vec!["c1", "c2", "c3"]),
    ] {
        let read = store.events(w.id, 0, 10).await.expect("events");
        assert_eq!(kinds(&read), expected);
        assert_eq!(load(&store, w.id).await.last_event_seq, read.len() as i64);
    }

    // An event whose seq is stored fails its commit alone (the batch is applied again commit
    // by commit for that); so does an event of a workspace that is not stored.
    let done = one_batch(
        &store,
        vec![
            events(&a, 2, "again"),
            events(&b, 3, "b3"),
            events(&workspace(), 1, "nowhere"),
        ],
    )
    .await;
    assert!(matches!(done[0], Err(StoreError::Conflict(_))), "{done:?}");
    assert_eq!(done[1].as_ref().ok(), Some(&CommitOutcome::Committed));
    assert!(done[2].is_err(), "{done:?}");
    assert_eq!(retried(), redone + 1);
    assert_eq!(
        kinds(&store.events(a.id, 0, 10).await.expect("events")),
        ["a1", "a2"]
    );
    assert_eq!(
        kinds(&store.events(b.id, 2, 10).await.expect("events")),
        ["b3"]
    );
    assert_eq!(load(&store, a.id).await.last_event_seq, 2);

    // A probe round's worth: events alone, of many workspaces.
    let many: Vec<WorkspaceRecord> = (0..40).map(|_| workspace()).collect();
    commit(&store, many.iter().map(insert).collect()).await;
    let (slow, redone) = (alone(), retried());
    let done = one_batch(
        &store,
        many.iter().map(|w| events(w, 1, "dropped")).collect(),
    )
    .await;
    assert!(done
        .iter()
        .all(|outcome| matches!(outcome, Ok(CommitOutcome::Committed))));
    assert_eq!((alone(), retried()), (slow, redone), "grouped");
    for w in &many {
        assert_eq!(
            kinds(&store.events(w.id, 0, 10).await.expect("events")),
            ["dropped"]
        );
    }

    // A state write moving `w` one generation on, fenced on `expected`.
    let moved_from = |w: &WorkspaceRecord, expected: Generation| {
        save_state(w.id, expected, at_generation(w, w.state.generation.0 + 1))
    };

    // Events alone, then a stale writer of the same workspace: the events stay, the writer is
    // fenced.
    let stale = moved_from(&c, Generation(c.state.generation.0 + 7));
    let done = one_batch(&store, vec![events(&c, 4, "c4"), vec![stale]]).await;
    assert_eq!(done[0].as_ref().ok(), Some(&CommitOutcome::Committed));
    assert!(
        matches!(done[1], Ok(CommitOutcome::Fenced { id, .. }) if id == c.id),
        "{done:?}"
    );
    assert_eq!(
        kinds(&store.events(c.id, 3, 10).await.expect("events")),
        ["c4"]
    );

    // A commit over two workspaces (applied alone, after what came before it) fenced on the
    // first, with a generation that does not encode on the second: the later commits of the
    // second are judged on what is stored.
    let moved = |w: &WorkspaceRecord| moved_from(w, w.state.generation);
    let done = one_batch(
        &store,
        vec![
            vec![moved(&a)],
            vec![
                moved(&a),
                save_state(b.id, Generation(u64::MAX), b.state.clone()),
            ],
            events(&b, 4, "b4"),
            vec![save_state(b.id, b.state.generation, b.state.clone())],
        ],
    )
    .await;
    assert_eq!(done[0].as_ref().ok(), Some(&CommitOutcome::Committed));
    assert!(
        matches!(done[1], Ok(CommitOutcome::Fenced { id, .. }) if id == a.id),
        "{done:?}"
    );
    assert_eq!(done[2].as_ref().ok(), Some(&CommitOutcome::Committed));
    assert_eq!(
        done[3].as_ref().ok(),
        Some(&CommitOutcome::Committed),
        "{done:?}"
    );
    store.close().await;
}

/// Events of several workspaces written interleaved: a read from any `seq`, with any limit,
/// gets exactly that workspace's events in order, whichever way the writer applied them
/// (grouped with state writes, or alone).
async fn events_of_interleaved_workspaces_are_read_from_any_seq(db: &TestDb) {
    const EVENTS: i64 = 200;
    let store = db.open().await;
    let workspaces: Vec<WorkspaceRecord> = (0..3).map(|_| workspace()).collect();
    commit(&store, workspaces.iter().map(insert).collect()).await;
    let retried = store.inner.counters.applied.retried.load(Ordering::Relaxed);
    let mut seq = 0;
    while seq < EVENTS {
        // Grouped: each commit a fenced state write and a few events of its workspace.
        let grouped = workspaces
            .iter()
            .map(|w| {
                let mut writes = vec![save_state(w.id, w.state.generation, w.state.clone())];
                writes.extend((seq + 1..=seq + 3).map(|s| Write::AppendEvent(event(w.id, s, "g"))));
                writes
            })
            .collect();
        for outcome in one_batch(&store, grouped).await {
            assert_eq!(outcome.expect("grouped commit"), CommitOutcome::Committed);
        }
        for w in &workspaces {
            assert_eq!(load(&store, w.id).await.last_event_seq, seq + 3);
        }
        // Alone (a commit with a secret write is not grouped): the workspaces interleaved.
        let alone = store.inner.counters.applied.alone.load(Ordering::Relaxed);
        let mut writes: Vec<Write> = (seq + 4..=seq + 5)
            .flat_map(|s| {
                workspaces
                    .iter()
                    .map(move |w| Write::AppendEvent(event(w.id, s, "o")))
            })
            .collect();
        writes.push(Write::DeleteSecret {
            id: workspaces[0].id,
            key: "absent".into(),
        });
        commit(&store, writes).await;
        assert_eq!(
            store.inner.counters.applied.alone.load(Ordering::Relaxed),
            alone + 1
        );
        seq += 5;
    }
    assert_eq!(
        store.inner.counters.applied.retried.load(Ordering::Relaxed),
        retried
    );
    for w in &workspaces {
        assert_eq!(load(&store, w.id).await.last_event_seq, EVENTS);
        for after in [
            0, 1, 2, 63, 64, 65, 66, 127, 128, 129, 150, 192, 193, 199, 200, 250,
        ] {
            for limit in [1, 7, 64, 65, 500] {
                let read = store.events(w.id, after, limit).await.expect("events");
                let expected: Vec<i64> = (after + 1..=EVENTS).take(limit as usize).collect();
                assert_eq!(
                    read.iter().map(|e| e.seq).collect::<Vec<_>>(),
                    expected,
                    "after {after}, limit {limit}"
                );
                assert!(read.iter().all(|e| e.workspace_id == w.id));
                if let Some(first) = read.first() {
                    let kind = if (first.seq - 1) % 5 < 3 { "g" } else { "o" };
                    assert_eq!(first, &event(w.id, first.seq, kind));
                }
            }
        }
    }
    // An event whose seq is stored is refused, grouped or not.
    let w = &workspaces[0];
    let stale = one_batch(
        &store,
        vec![vec![
            save_state(w.id, w.state.generation, w.state.clone()),
            Write::AppendEvent(event(w.id, EVENTS, "again")),
        ]],
    )
    .await;
    assert!(
        matches!(stale[0], Err(StoreError::Conflict(_))),
        "{stale:?}"
    );
    let alone = store
        .commit(vec![Write::AppendEvent(event(w.id, 3, "again"))])
        .await;
    assert!(matches!(alone, Err(StoreError::Conflict(_))), "{alone:?}");
    assert_eq!(
        store.events(w.id, EVENTS - 1, 10).await.expect("events")[0].kind,
        "o"
    );
    store.close().await;
}

/// A database written before events were stored in append order (migrations 1 and 2) keeps
/// every event, readable from any `seq`, and new events follow them.
async fn events_recorded_before_the_append_order_migration_are_kept(db: &TestDb) {
    let pool = migrated_until(db, 2).await;
    let ids: Vec<WorkspaceId> = (0..2)
        .map(|_| WorkspaceId::from(uuid::Uuid::new_v4()))
        .collect();
    let quiet = WorkspaceId::from(uuid::Uuid::new_v4());
    for id in ids.iter().chain([&quiet]) {
        sqlx::query(
            "INSERT INTO workspaces (id, name, provider, env, ready_when, phase, desired, \
             generation, observed_generation, pending, backoff_attempt, recent_failures, \
             retry_causes, cycle_causes, agent_generation, created_at, updated_at) \
             VALUES ($1, 'old', 'sim', '{}', 'instance', 'running', 'running', 1, 1, '', 0, \
             '[]', '', '', 1, 1, 1)",
        )
        .bind(id.to_string())
        .execute(&pool)
        .await
        .expect("an old workspace");
    }
    // Interleaved, as they were written.
    for seq in 1..=70 {
        for id in &ids {
            let e = event(*id, seq, "old");
            sqlx::query(
                "INSERT INTO events (workspace_id, seq, generation, at, kind, data) \
                 VALUES ($1, $2, 1, $3, 'old', $4)",
            )
            .bind(id.to_string())
            .bind(seq)
            .bind(e.at.0)
            .bind(e.data.to_string())
            .execute(&pool)
            .await
            .expect("an old event");
        }
    }
    pool.close().await;

    let store = db.open().await;
    let stored = load(&store, quiet).await;
    assert_eq!(stored.last_event_seq, 0);
    assert!(store.events(quiet, 0, 10).await.expect("events").is_empty());
    commit(
        &store,
        vec![
            save_state(quiet, stored.state.generation, stored.state.clone()),
            Write::AppendEvent(event(quiet, 1, "new")),
        ],
    )
    .await;
    assert_eq!(
        kinds(&store.events(quiet, 0, 10).await.expect("events")),
        ["new"]
    );
    for id in &ids {
        let stored = load(&store, *id).await;
        assert_eq!(stored.last_event_seq, 70);
        let all = store.events(*id, 0, 1000).await.expect("events");
        assert_eq!(
            all,
            (1..=70).map(|s| event(*id, s, "old")).collect::<Vec<_>>()
        );
        let tail = store.events(*id, 64, 3).await.expect("events");
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [65, 66, 67]);
        commit(
            &store,
            vec![
                save_state(*id, stored.state.generation, stored.state.clone()),
                Write::AppendEvent(event(*id, 71, "new")),
            ],
        )
        .await;
        assert_eq!(
            kinds(&store.events(*id, 69, 10).await.expect("events")),
            ["old", "new"]
        );
    }
    store.close().await;
}

/// A database written by the previous schema (migrations 1 to 5: a column per field, events
/// in append order) is converted when the store opens it: every workspace, secret, event and
/// idempotency key is found, a failure reason stored as bare text still reads, and writes go
/// on from there.
async fn a_database_of_the_previous_schema_is_converted(db: &TestDb) {
    let pool = migrated_until(db, 5).await;
    let key = crate::SecretKey::load_or_create(&db.key_path()).expect("key");
    let full = workspace();
    let mut parked = bare_workspace();
    parked.state.phase = Phase::Failed;
    parked.state.failure = Some(Failure {
        reason: FailureReason::Parked(steward_domain::ParkReason::CrashLoop),
        generation: Generation(0),
        consecutive: 1,
    });
    let causes =
        |set: steward_domain::CauseSet| set.iter().map(Cause::as_str).collect::<Vec<_>>().join(",");
    let failure_columns = |record: &WorkspaceRecord| match &record.state.failure {
        // Written by the previous store: typed reasons as JSON, older ones as bare text.
        Some(failure) if record.id == full.id => (
            Some(r#"{"reason":{"step":{"provider":"image missing"}},"consecutive":2}"#.to_owned()),
            Some(failure.generation.0 as i64),
        ),
        Some(failure) => (
            Some("crash_loop".to_owned()),
            Some(failure.generation.0 as i64),
        ),
        None => (None, None),
    };
    for record in [&full, &parked] {
        let s = &record.state;
        let (failure_reason, failure_generation) = failure_columns(record);
        let switch = s.switch.as_ref().map(|w| {
            serde_json::json!({
                "from": w.from, "to": w.to, "from_ready": w.from_ready.as_str(),
                "to_ready": w.to_ready.as_str(), "stage": w.stage.as_str(),
                "rollback": w.rollback,
            })
            .to_string()
        });
        sqlx::query(
            "INSERT INTO workspaces (id, name, provider, image, command, env, model, \
             ready_when, phase, desired, generation, observed_generation, pending, \
             failure_reason, failure_generation, backoff_attempt, recent_failures, \
             last_cycle_started_at, last_cycle_ended_at, healthy_since, retry_at, retry_causes, \
             cycle_generation, cycle_causes, cycle_started_at, switch_state, agent_generation, \
             agent_token_hash, agent_url, agent_last_heartbeat_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
        )
        .bind(record.id.to_string())
        .bind(&record.spec.name)
        .bind(&record.spec.provider)
        .bind(&record.spec.image)
        .bind(
            record
                .spec
                .command
                .as_ref()
                .map(|c| serde_json::json!(c).to_string()),
        )
        .bind(serde_json::json!(record.spec.env).to_string())
        .bind(&record.spec.model)
        .bind(s.ready_when.as_str())
        .bind(s.phase.as_str())
        .bind(s.desired.as_str())
        .bind(s.generation.0 as i64)
        .bind(s.observed_generation.0 as i64)
        .bind(causes(s.pending))
        .bind(failure_reason)
        .bind(failure_generation)
        .bind(i64::from(s.backoff_attempt))
        .bind(
            serde_json::json!(s.recent_failures.iter().map(|t| t.0).collect::<Vec<_>>())
                .to_string(),
        )
        .bind(s.last_cycle_started_at.map(|t| t.0))
        .bind(s.last_cycle_ended_at.map(|t| t.0))
        .bind(s.healthy_since.map(|t| t.0))
        .bind(s.retry.map(|r| r.at.0))
        .bind(s.retry.map(|r| causes(r.causes)).unwrap_or_default())
        .bind(s.cycle.map(|c| c.generation.0 as i64))
        .bind(s.cycle.map(|c| causes(c.causes)).unwrap_or_default())
        .bind(s.cycle.map(|c| c.started_at.0))
        .bind(switch)
        .bind(record.agent.generation.0 as i64)
        .bind(
            record
                .agent
                .token_hash
                .map(|h| h.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        )
        .bind(&record.agent.url)
        .bind(record.agent.last_heartbeat_at.map(|t| t.0))
        .bind(record.created_at.0)
        .bind(record.updated_at.0)
        .execute(&pool)
        .await
        .expect("a workspace in the previous shape");
        for (name, value) in &record.secrets {
            sqlx::query("INSERT INTO secrets (workspace_id, key, ciphertext) VALUES ($1, $2, $3)")
                .bind(record.id.to_string())
                .bind(name)
                .bind(
                    key.encrypt(record.id, name, value.expose_secret())
                        .expect("encrypted"),
                )
                .execute(&pool)
                .await
                .expect("a secret");
        }
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (key, workspace_id, body_hash, created_at) \
         VALUES ('create-1', $1, 'hash', 1)",
    )
    .bind(full.id.to_string())
    .execute(&pool)
    .await
    .expect("an idempotency key");
    // Events in append order, the two workspaces' interleaved; and those of a workspace
    // deleted while its purge was still going on.
    let gone = WorkspaceId::from(uuid::Uuid::new_v4());
    let mut id = 0;
    for seq in 1..=70 {
        for workspace in [full.id, parked.id, gone] {
            id += 1;
            let e = event(workspace, seq, "old");
            sqlx::query(
                "INSERT INTO events (id, workspace_id, seq, generation, at, kind, data) \
                 VALUES ($1, $2, $3, 1, $4, 'old', $5)",
            )
            .bind(id)
            .bind(workspace.to_string())
            .bind(seq)
            .bind(e.at.0)
            .bind(e.data.to_string())
            .execute(&pool)
            .await
            .expect("an event");
        }
    }
    sqlx::query("UPDATE workspaces SET last_event_seq = 70, last_event_id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .expect("where events end");
    sqlx::query("INSERT INTO event_purges (workspace_id, next_id, end_id) VALUES ($1, 1, $2)")
        .bind(gone.to_string())
        .bind(id)
        .execute(&pool)
        .await
        .expect("a purge under way");
    pool.close().await;

    let store = db.open().await;
    let all = store.load_all().await.expect("load all");
    assert_eq!(all.len(), 2);
    for mut expected in [full.clone(), parked.clone()] {
        expected.last_event_seq = 70;
        let stored = all.iter().find(|r| r.id == expected.id).expect("converted");
        assert_same(stored, &expected);
        assert_eq!(
            store.events(expected.id, 0, 1000).await.expect("events"),
            (1..=70)
                .map(|s| event(expected.id, s, "old"))
                .collect::<Vec<_>>()
        );
    }
    assert!(store.events(gone, 0, 10).await.expect("events").is_empty());
    assert_eq!(
        store.idempotency("create-1").await.expect("idempotency"),
        Some((full.id, "hash".to_owned()))
    );
    // Writes go on: fenced on the converted generation, events after the converted ones.
    let next = at_generation(&full, 4);
    commit(
        &store,
        vec![
            save_state(full.id, Generation(3), next.clone()),
            Write::AppendEvent(event(full.id, 71, "new")),
        ],
    )
    .await;
    assert_eq!(load(&store, full.id).await.state, next);
    assert_eq!(
        kinds(&store.events(full.id, 69, 10).await.expect("events")),
        ["old", "new"]
    );
    store.close().await;
}

async fn deleting_a_workspace_removes_everything_of_it(db: &TestDb) {
    const EVENTS: i64 = 400;
    let store = db.open().await;
    let doomed = workspace();
    let kept = workspace();
    commit(
        &store,
        vec![
            Write::InsertWorkspace {
                record: Box::new(doomed.clone()),
                idempotency: Some(("doomed".into(), "h".into())),
            },
            insert(&kept),
        ],
    )
    .await;
    // Interleaved.
    commit(
        &store,
        (1..=EVENTS)
            .flat_map(|seq| {
                [doomed.id, kept.id].map(|id| {
                    Write::AppendEvent(event(id, seq, if seq == 1 { "created" } else { "e" }))
                })
            })
            .collect(),
    )
    .await;
    commit(&store, vec![Write::DeleteWorkspace { id: doomed.id }]).await;
    // A second delete changes nothing and fails nothing.
    commit(&store, vec![Write::DeleteWorkspace { id: doomed.id }]).await;
    let count = |table: &'static str, column: &'static str, id: WorkspaceId| {
        let pool = store.inner.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} = $1"
            ))
            .bind(id.to_string())
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    for (table, column) in [
        ("events", "workspace_id"),
        ("secrets", "workspace_id"),
        ("idempotency_keys", "workspace_id"),
        ("workspaces", "id"),
    ] {
        assert_eq!(count(table, column, doomed.id).await, 0, "{table}");
    }
    assert!(store.load(doomed.id).await.expect("load").is_none());
    assert!(store
        .events(doomed.id, 0, 10)
        .await
        .expect("events")
        .is_empty());
    assert_eq!(
        store.idempotency("doomed").await.expect("idempotency"),
        None
    );
    assert_eq!(count("events", "workspace_id", kept.id).await, EVENTS);
    let mut kept = kept;
    kept.last_event_seq = EVENTS;
    assert_same(&load(&store, kept.id).await, &kept);
    assert_eq!(
        store.events(kept.id, 0, 1000).await.expect("events").len(),
        EVENTS as usize
    );
    store.close().await;
}

/// Keys stored before body digests were keyed (migrations 1 to 4) lose their bare SHA-256,
/// which anyone reading the database could match against a guessed body; keyed ones stay.
async fn bare_idempotency_digests_are_erased_on_upgrade(db: &TestDb) {
    let pool = migrated_until(db, 4).await;
    let id = WorkspaceId::from(uuid::Uuid::new_v4());
    sqlx::query(
        "INSERT INTO workspaces (id, name, provider, env, ready_when, phase, desired, \
         generation, observed_generation, pending, backoff_attempt, recent_failures, \
         retry_causes, cycle_causes, agent_generation, created_at, updated_at) \
         VALUES ($1, 'old', 'sim', '{}', 'instance', 'running', 'running', 1, 1, '', 0, \
         '[]', '', '', 1, 1, 1)",
    )
    .bind(id.to_string())
    .execute(&pool)
    .await
    .expect("an old workspace");
    let bare = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    for (key, digest) in [("bare", bare), ("keyed", "hmac-sha256:00ff")] {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, workspace_id, body_hash, created_at) \
             VALUES ($1, $2, $3, 1)",
        )
        .bind(key)
        .bind(id.to_string())
        .bind(digest)
        .execute(&pool)
        .await
        .expect("an old key");
    }
    pool.close().await;

    let store = db.open().await;
    assert_eq!(
        store.idempotency("bare").await.expect("read"),
        Some((id, String::new()))
    );
    assert_eq!(
        store.idempotency("keyed").await.expect("read"),
        Some((id, "hmac-sha256:00ff".to_owned()))
    );
    store.close().await;
}

async fn reopening_keeps_everything(db: &TestDb) {
    let store = db.open().await;
    let record = workspace();
    commit(
        &store,
        vec![
            Write::InsertWorkspace {
                record: Box::new(record.clone()),
                idempotency: Some(("k".into(), "h".into())),
            },
            Write::AppendEvent(event(record.id, 1, "created")),
        ],
    )
    .await;
    store.close().await;
    let closed = store
        .commit(vec![Write::DeleteWorkspace { id: record.id }])
        .await;
    assert!(matches!(closed, Err(StoreError::Closed)), "{closed:?}");
    store.close().await; // closing twice is harmless

    let mode = std::fs::metadata(db.key_path())
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let store = db.open().await;
    let mut expected = record.clone();
    expected.last_event_seq = 1;
    assert_same(&load(&store, record.id).await, &expected);
    assert_eq!(
        store.events(record.id, 0, 10).await.expect("events"),
        [event(record.id, 1, "created")]
    );
    assert_eq!(
        store.idempotency("k").await.expect("idempotency"),
        Some((record.id, "h".to_owned()))
    );
    store.close().await;

    // Another secrets key cannot read the secrets.
    let other_key = db.dir.path().join("other.key");
    let store = Store::open(db.options(), &other_key).await.expect("open");
    let foreign = store.load(record.id).await;
    assert!(matches!(foreign, Err(StoreError::Crypto(_))), "{foreign:?}");
    store.close().await;
}

async fn concurrent_commits_are_grouped_and_all_succeed(db: &TestDb) {
    const COMMITS: i64 = 200;
    let store = db.open().await;
    let record = bare_workspace();
    commit(&store, vec![insert(&record)]).await;
    let batches = store.inner.counters.batches.load(Ordering::Relaxed);

    let mut tasks = tokio::task::JoinSet::new();
    for seq in 1..=COMMITS {
        let store = store.clone();
        let write = Write::AppendEvent(event(record.id, seq, "restart_requested"));
        tasks.spawn(async move { store.commit(vec![write]).await });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(
            done.expect("task").expect("commit"),
            CommitOutcome::Committed
        );
    }

    let batches = store.inner.counters.batches.load(Ordering::Relaxed) - batches;
    assert!(batches < 50, "{batches} batches for {COMMITS} commits");
    assert_eq!(load(&store, record.id).await.last_event_seq, COMMITS);
    let events = store.events(record.id, 0, 1_000).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=COMMITS).collect::<Vec<_>>()
    );
    store.close().await;
}

async fn enqueued_commits_apply_in_order_and_overload_is_refused(db: &TestDb) {
    let store = db.open().await;
    let record = bare_workspace(); // generation 0
    commit(&store, vec![insert(&record)]).await;

    // Each commit expects the generation the one before wrote: all apply only if in order.
    let chain: Vec<_> = (0..100)
        .map(|generation| {
            let mut state = record.state.clone();
            state.generation = Generation(generation + 1);
            store.enqueue(vec![save_state(record.id, Generation(generation), state)])
        })
        .collect();
    for pending in chain {
        assert_eq!(pending.await.expect("commit"), CommitOutcome::Committed);
    }
    assert_eq!(
        load(&store, record.id).await.state.generation,
        Generation(100)
    );

    // Nothing runs between synchronous enqueues: the queue fills up, then refuses.
    let capacity = db.options().max_batch * crate::writer::QUEUED_BATCHES;
    let queued: Vec<_> = (0..capacity).map(|_| store.enqueue(Vec::new())).collect();
    let refused = store
        .enqueue(vec![Write::DeleteWorkspace { id: record.id }])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Overloaded)),
        "{refused:?}"
    );
    for pending in queued {
        assert_eq!(pending.await.expect("commit"), CommitOutcome::Committed);
    }
    assert!(store.load(record.id).await.expect("load").is_some());
    store.close().await;
}

/// A batch mixing lifecycle commits (applied grouped), a create and a delete (applied one by
/// one between them): every commit gets the outcome it would get alone, in enqueue order, and
/// a commit that fails inside a grouped run fails alone.
async fn one_batch_of_many_commits_keeps_each_commits_fences_and_atomicity(db: &TestDb) {
    let store = db.open().await;
    let a = workspace(); // generation 3
    let b = bare_workspace(); // generation 0
    let doomed = bare_workspace();
    commit(&store, vec![insert(&a), insert(&doomed)]).await;
    let at = |state: &MachineState, generation: u64, phase: Phase| {
        let mut next = state.clone();
        next.generation = Generation(generation);
        next.phase = phase;
        next
    };
    let a4 = at(&a.state, 4, Phase::Provisioning);
    let a5 = at(&a.state, 5, Phase::Running);
    let b1 = at(&b.state, 1, Phase::Provisioning);
    let agent = |generation: u64, url: &str| AgentRecord {
        generation: Generation(generation),
        token_hash: Some([generation as u8; 32]),
        url: Some(url.into()),
        last_heartbeat_at: None,
    };
    let mut spec = a.spec.clone();
    spec.model = Some("large".into());

    let requests = vec![
        // a: 3 -> 4 with its agent and events; then a stale writer; then 4 -> 5.
        vec![
            save_state(a.id, Generation(3), a4.clone()),
            Write::SaveAgent {
                id: a.id,
                agent: agent(4, "http://a4"),
            },
            Write::AppendEvent(event(a.id, 1, "a1")),
            Write::AppendEvent(event(a.id, 2, "a2")),
        ],
        vec![
            save_state(a.id, Generation(3), a4.clone()),
            Write::AppendEvent(event(a.id, 3, "stale")),
        ],
        // The create of b, then b's first cycle, in the same batch.
        vec![insert(&b)],
        vec![
            save_state(b.id, Generation(0), b1.clone()),
            Write::AppendEvent(event(b.id, 1, "b1")),
        ],
        vec![
            save_state(a.id, Generation(4), a5.clone()),
            Write::SaveSpec {
                id: a.id,
                expected_generation: Generation(4),
                spec: spec.clone(),
            },
            // An agent record of the generation just replaced: the whole commit is fenced.
            Write::SaveAgent {
                id: a.id,
                agent: agent(4, "http://a4-late"),
            },
        ],
        vec![
            save_state(a.id, Generation(4), a5.clone()),
            Write::SaveSpec {
                id: a.id,
                expected_generation: Generation(5),
                spec: spec.clone(),
            },
            Write::SaveAgent {
                id: a.id,
                agent: agent(5, "http://a5"),
            },
            Write::AppendEvent(event(a.id, 3, "a3")),
        ],
        vec![Write::DeleteWorkspace { id: doomed.id }],
    ];
    let counters = &store.inner.counters.applied;
    let alone = counters.alone.load(Ordering::Relaxed);
    let outcomes = one_batch(&store, requests).await;
    // The create, the delete, and the commit whose spec write expects another generation than
    // its state write leaves, were applied alone; the rest grouped, with no retry.
    assert_eq!(counters.alone.load(Ordering::Relaxed), alone + 3);
    assert_eq!(counters.retried.load(Ordering::Relaxed), 0);
    let fenced = |id, generation| {
        Ok(CommitOutcome::Fenced {
            id,
            expected: Generation(generation),
        })
    };
    let committed = Ok(CommitOutcome::Committed);
    let outcomes: Vec<Result<CommitOutcome, ()>> = outcomes
        .iter()
        .map(|outcome| outcome.as_ref().copied().map_err(|_| ()))
        .collect();
    assert_eq!(
        outcomes,
        [
            committed,
            fenced(a.id, 3),
            committed,
            committed,
            fenced(a.id, 4),
            committed,
            committed,
        ]
    );

    let stored_a = load(&store, a.id).await;
    assert_eq!(stored_a.state, a5);
    assert_eq!(stored_a.spec, spec);
    assert_eq!(stored_a.agent, agent(5, "http://a5"));
    let events = store.events(a.id, 0, 10).await.expect("events");
    assert_eq!(kinds(&events), ["a1", "a2", "a3"]);
    let stored_b = load(&store, b.id).await;
    assert_eq!(stored_b.state, b1);
    assert_eq!(
        kinds(&store.events(b.id, 0, 10).await.expect("events")),
        ["b1"]
    );
    assert!(store.load(doomed.id).await.expect("load").is_none());

    // A stale writer and a row that is gone are fenced by the grouped `UPDATE`; when a grouped
    // statement fails (a duplicate event seq), the batch is applied again commit by commit:
    // each commit gets its own outcome, and the others still apply.
    let b2 = at(&b.state, 2, Phase::Running);
    let outcomes = one_batch(
        &store,
        vec![
            vec![
                save_state(b.id, Generation(1), b2.clone()),
                Write::AppendEvent(event(b.id, 1, "b1-again")),
            ],
            vec![save_state(a.id, Generation(4), a5.clone())],
            vec![save_state(doomed.id, Generation(0), b1.clone())],
            vec![
                save_state(b.id, Generation(1), b2.clone()),
                Write::AppendEvent(event(b.id, 2, "b2")),
            ],
        ],
    )
    .await;
    assert_eq!(counters.retried.load(Ordering::Relaxed), 1);
    assert!(
        matches!(outcomes[0], Err(StoreError::Conflict(_))),
        "{:?}",
        outcomes[0]
    );
    assert_eq!(
        outcomes[1..]
            .iter()
            .map(|outcome| outcome.as_ref().ok().copied())
            .collect::<Vec<_>>(),
        [
            Some(CommitOutcome::Fenced {
                id: a.id,
                expected: Generation(4)
            }),
            Some(CommitOutcome::Fenced {
                id: doomed.id,
                expected: Generation(0)
            }),
            Some(CommitOutcome::Committed),
        ]
    );
    assert_eq!(load(&store, a.id).await.state, a5);
    assert_eq!(load(&store, b.id).await.state, b2);
    assert_eq!(
        kinds(&store.events(b.id, 0, 10).await.expect("events")),
        ["b1", "b2"]
    );
    store.close().await;
}

/// Commits of several workspaces in one round: the stale one is fenced, alone, and the others
/// are written, with their events, without applying the batch again.
async fn a_stale_commit_in_a_round_is_fenced_alone(db: &TestDb) {
    let store = db.open().await;
    let (a, b) = (workspace(), workspace()); // generation 3 each
    commit(&store, vec![insert(&a), insert(&b)]).await;
    let at = |generation: u64| at_generation(&a, generation);
    let retried = store.inner.counters.applied.retried.load(Ordering::Relaxed);
    let done = one_batch(
        &store,
        vec![
            vec![
                save_state(a.id, Generation(3), at(4)),
                Write::AppendEvent(event(a.id, 1, "a1")),
            ],
            vec![save_state(b.id, Generation(9), at(10))],
        ],
    )
    .await;
    let done: Vec<_> = done.into_iter().map(|d| d.expect("no error")).collect();
    assert_eq!(
        done,
        [
            CommitOutcome::Committed,
            CommitOutcome::Fenced {
                id: b.id,
                expected: Generation(9)
            }
        ]
    );
    assert_eq!(
        store.inner.counters.applied.retried.load(Ordering::Relaxed),
        retried
    );
    assert_eq!(load(&store, a.id).await.state.generation, Generation(4));
    assert_eq!(load(&store, b.id).await.state.generation, Generation(3));
    assert_eq!(
        kinds(&store.events(a.id, 0, 10).await.expect("events")),
        ["a1"]
    );
    store.close().await;
}

/// A batch of more commits than one statement takes, up to three per workspace: applied in
/// three rounds (each with one commit of a workspace at most), every fence and event kept.
async fn a_large_batch_is_applied_in_rounds_of_one_commit_per_workspace(db: &TestDb) {
    const WORKSPACES: usize = crate::sql::MAX_ROWS + 22;
    let options = StoreOptions {
        max_batch: 4 * WORKSPACES,
        ..db.options()
    };
    let store = Store::open(options, &db.key_path()).await.expect("open");
    let records: Vec<WorkspaceRecord> = (0..WORKSPACES).map(|_| workspace()).collect();
    commit(&store, records.iter().map(insert).collect()).await;
    let counters = &store.inner.counters.applied;
    let (rounds, alone) = (
        counters.rounds.load(Ordering::Relaxed),
        counters.alone.load(Ordering::Relaxed),
    );
    // Each workspace 3 -> 4 with an event, then 4 -> 5 with another; every third workspace
    // also has a stale writer, which is fenced and writes nothing.
    let mut requests = Vec::new();
    for (i, r) in records.iter().enumerate() {
        requests.push(vec![
            save_state(r.id, Generation(3), at_generation(r, 4)),
            Write::AppendEvent(event(r.id, 1, "e1")),
        ]);
        if i % 3 == 0 {
            requests.push(vec![
                save_state(r.id, Generation(3), at_generation(r, 4)),
                Write::AppendEvent(event(r.id, 2, "stale")),
            ]);
        }
    }
    for r in &records {
        requests.push(vec![
            save_state(r.id, Generation(4), at_generation(r, 5)),
            Write::AppendEvent(event(r.id, 2, "e2")),
        ]);
    }
    let done = one_batch(&store, requests).await;
    let fenced = done
        .iter()
        .filter(|d| matches!(d, Ok(CommitOutcome::Fenced { .. })))
        .count();
    assert_eq!(fenced, WORKSPACES.div_ceil(3));
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    assert_eq!(counters.rounds.load(Ordering::Relaxed), rounds + 3);
    assert_eq!(counters.alone.load(Ordering::Relaxed), alone);
    assert_eq!(counters.retried.load(Ordering::Relaxed), 0);
    for r in &records {
        let stored = load(&store, r.id).await;
        assert_eq!(stored.state.generation, Generation(5));
        assert_eq!(stored.last_event_seq, 2);
        assert_eq!(
            kinds(&store.events(r.id, 0, 10).await.expect("events")),
            ["e1", "e2"]
        );
    }
    store.close().await;
}

/// Batches made only of lifecycle commits: every commit gets the outcome applying them one
/// by one would give, including when a write before a commit's fence
/// would fail first or concerns another workspace.
async fn fenced_verdicts_in_a_grouped_batch_match_one_by_one(db: &TestDb) {
    let store = db.open().await;
    let a = workspace(); // generation 3
    let b = bare_workspace(); // generation 0
    commit(&store, vec![insert(&a), insert(&b)]).await;
    let at = |generation: u64| at_generation(&a, generation);
    let counters = &store.inner.counters.applied;
    let ways = || {
        (
            counters.alone.load(Ordering::Relaxed),
            counters.retried.load(Ordering::Relaxed),
        )
    };
    let outcomes = |done: Vec<Result<CommitOutcome, StoreError>>| {
        done.into_iter()
            .map(|outcome| outcome.map_err(|e| matches!(e, StoreError::Conflict(_))))
            .collect::<Vec<_>>()
    };
    let fenced = |id, generation| {
        Ok(CommitOutcome::Fenced {
            id,
            expected: Generation(generation),
        })
    };

    // A stale writer after the current one: fenced by the grouped `UPDATE` of its round.
    let (alone, retried) = ways();
    let done = one_batch(
        &store,
        vec![
            vec![save_state(a.id, Generation(3), at(4))],
            vec![save_state(a.id, Generation(3), at(4))],
        ],
    )
    .await;
    assert_eq!(
        outcomes(done),
        [Ok(CommitOutcome::Committed), fenced(a.id, 3)]
    );
    assert_eq!(ways(), (alone, retried));

    // An event before a stale fence: the commit is applied alone, where its duplicate seq
    // fails it first, as it would on its own.
    let done = one_batch(
        &store,
        vec![
            vec![
                save_state(a.id, Generation(4), at(5)),
                Write::AppendEvent(event(a.id, 1, "a1")),
            ],
            vec![
                Write::AppendEvent(event(a.id, 1, "dup")),
                save_state(a.id, Generation(4), at(5)),
            ],
        ],
    )
    .await;
    assert_eq!(outcomes(done), [Ok(CommitOutcome::Committed), Err(true)]);
    assert_eq!(ways(), (alone + 1, retried));

    // A commit on two workspaces whose first is stale: fenced on that one, not the other.
    let done = one_batch(
        &store,
        vec![
            vec![save_state(a.id, Generation(5), at(6))],
            vec![
                save_state(b.id, Generation(9), b.state.clone()),
                save_state(a.id, Generation(5), at(6)),
            ],
        ],
    )
    .await;
    assert_eq!(
        outcomes(done),
        [Ok(CommitOutcome::Committed), fenced(b.id, 9)]
    );
    assert_eq!(load(&store, a.id).await.state, at(6));
    assert_eq!(load(&store, b.id).await.state, b.state);
    assert_eq!(
        kinds(&store.events(a.id, 0, 10).await.expect("events")),
        ["a1"]
    );
    store.close().await;
}

/// A pool on `db` with the migrations up to `version` applied (a database as an earlier
/// store left it).
async fn migrated_until(db: &TestDb, version: i64) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    if let Some(file) = crate::sqlite::sqlite_file(&db.url) {
        std::fs::create_dir_all(file.parent().expect("a directory")).expect("data dir");
    }
    let pool = sqlx::AnyPool::connect(&db.url).await.expect("connect");
    let all = crate::writer::migrator(db.postgres.is_none());
    let before = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            all.iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&pool).await.expect("the earlier migrations");
    pool
}

/// Enqueues every commit before any is written (so they form one batch) and awaits them all.
async fn one_batch(
    store: &Store,
    requests: Vec<Vec<Write>>,
) -> Vec<Result<CommitOutcome, StoreError>> {
    let batches = store.inner.counters.batches.load(Ordering::Relaxed);
    let pending: Vec<_> = requests.into_iter().map(|w| store.enqueue(w)).collect();
    let mut outcomes = Vec::new();
    for commit in pending {
        outcomes.push(commit.await);
    }
    assert_eq!(
        store.inner.counters.batches.load(Ordering::Relaxed),
        batches + 1
    );
    outcomes
}

/// A database for one test: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// database. The secrets key lives in the temporary directory either way.
struct TestDb {
    dir: TempDir,
    url: String,
    /// For PostgreSQL: the server URL the test database was created through, and its name.
    postgres: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = TempDir::new().expect("temp dir");
        let file = dir.path().join("data/steward.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        TestDb {
            dir,
            url,
            postgres: None,
        }
    }

    /// A fresh database on the server at `STEWARD_TEST_DATABASE_URL`, or `None` (with a
    /// notice) if it is unset outside CI.
    async fn postgres() -> Option<TestDb> {
        let Ok(server) = std::env::var("STEWARD_TEST_DATABASE_URL") else {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("PostgreSQL tests need STEWARD_TEST_DATABASE_URL");
            }
            eprintln!("notice: STEWARD_TEST_DATABASE_URL is unset; PostgreSQL run skipped");
            return None;
        };
        let name = format!(
            "steward_test_{}",
            WorkspaceId::from(uuid::Uuid::new_v4()).as_uuid().simple()
        );
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        Some(TestDb {
            dir: TempDir::new().expect("temp dir"),
            url: with_database(&server, &name),
            postgres: Some((server, name)),
        })
    }

    fn options(&self) -> StoreOptions {
        StoreOptions {
            database_url: self.url.clone(),
            max_batch: 64,
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("keys/secrets.key")
    }

    async fn open(&self) -> Store {
        Store::open(self.options(), &self.key_path())
            .await
            .expect("open the store")
    }

    async fn drop_database(self) {
        if let Some((server, name)) = &self.postgres {
            admin(server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
    }
}

/// Runs one statement on the PostgreSQL server (outside any test database).
async fn admin(server: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(server)
        .await
        .expect("connect to STEWARD_TEST_DATABASE_URL");
    conn.execute(statement).await.expect(statement);
    conn.close().await.expect("disconnect");
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let (scheme, rest) = head.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or_default();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{authority}/{name}{query}")
}

/// A workspace with every optional field set.
fn workspace() -> WorkspaceRecord {
    let mut state = MachineState::new(ReadyWhen::Agent);
    state.phase = Phase::Running;
    state.generation = Generation(3);
    state.observed_generation = Generation(3);
    state.pending = [Cause::Manual, Cause::Config].into_iter().collect();
    state.failure = Some(Failure {
        reason: FailureReason::Step(StepFailure::Provider("image missing".into())),
        generation: Generation(2),
        consecutive: 2,
    });
    state.backoff_attempt = 1;
    state.recent_failures = vec![Timestamp(1_000), Timestamp(2_000)];
    state.last_cycle_started_at = Some(Timestamp(3_000));
    state.last_cycle_ended_at = Some(Timestamp(4_000));
    state.healthy_since = Some(Timestamp(5_000));
    state.retry = Some(ScheduledRetry {
        at: Timestamp(6_000),
        causes: [Cause::Config, Cause::Health].into_iter().collect(),
    });
    state.cycle = Some(Cycle {
        generation: Generation(3),
        causes: [Cause::Manual].into_iter().collect(),
        started_at: Timestamp(7_000),
    });
    state.switch = Some(Box::new(Switch {
        from: "docker".into(),
        to: "process".into(),
        from_ready: ReadyWhen::Instance,
        to_ready: ReadyWhen::Agent,
        stage: SwitchStage::Arrived,
        rollback: false,
    }));
    WorkspaceRecord {
        id: WorkspaceId::from(uuid::Uuid::new_v4()),
        spec: WorkspaceSpec {
            name: "demo".into(),
            provider: "docker".into(),
            image: Some("busybox".into()),
            command: Some(vec!["agent".into(), "--port".into(), "0".into()]),
            env: [("LOG".to_owned(), "debug".to_owned())].into(),
            model: Some("small".into()),
        },
        state,
        secrets: [
            ("API_KEY".to_owned(), secret("canary-api-key-7f3a")),
            ("DB_PASSWORD".to_owned(), secret("canary-db-password-91c2")),
        ]
        .into(),
        agent: AgentRecord {
            generation: Generation(3),
            token_hash: Some([0xab; 32]),
            url: Some("http://127.0.0.1:1".into()),
            last_heartbeat_at: Some(Timestamp(6_000)),
        },
        last_event_seq: 0,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(6_000),
    }
}

/// A new workspace with every optional field empty.
fn bare_workspace() -> WorkspaceRecord {
    WorkspaceRecord {
        id: WorkspaceId::from(uuid::Uuid::new_v4()),
        spec: WorkspaceSpec {
            name: "bare".into(),
            provider: "sim".into(),
            image: None,
            command: None,
            env: Default::default(),
            model: None,
        },
        state: MachineState::new(ReadyWhen::Instance),
        secrets: Default::default(),
        agent: AgentRecord::default(),
        last_event_seq: 0,
        created_at: Timestamp(10),
        updated_at: Timestamp(10),
    }
}

fn insert(record: &WorkspaceRecord) -> Write {
    Write::InsertWorkspace {
        record: Box::new(record.clone()),
        idempotency: None,
    }
}

fn put_secret(id: WorkspaceId, key: &str, value: &str) -> Write {
    Write::PutSecret {
        id,
        key: key.into(),
        value: secret(value),
    }
}

/// `record`'s state, moved to `generation`.
fn at_generation(record: &WorkspaceRecord, generation: u64) -> MachineState {
    let mut next = record.state.clone();
    next.generation = Generation(generation);
    next
}

fn save_state(id: WorkspaceId, expected_generation: Generation, state: MachineState) -> Write {
    Write::SaveState {
        id,
        expected_generation,
        state,
        at: Timestamp(7_000),
    }
}

fn event(workspace_id: WorkspaceId, seq: i64, kind: &str) -> EventRecord {
    EventRecord {
        workspace_id,
        seq,
        generation: Generation(1),
        at: Timestamp(seq * 10),
        kind: kind.into(),
        data: serde_json::json!({ "seq": seq, "cause": "manual" }),
    }
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn kinds(events: &[EventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

async fn commit(store: &Store, writes: Vec<Write>) {
    assert_eq!(
        store.commit(writes).await.expect("commit"),
        CommitOutcome::Committed
    );
}

async fn load(store: &Store, id: WorkspaceId) -> WorkspaceRecord {
    store.load(id).await.expect("load").expect("stored")
}

fn assert_same(actual: &WorkspaceRecord, expected: &WorkspaceRecord) {
    let secrets = |r: &WorkspaceRecord| {
        r.secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(actual.id, expected.id);
    assert_eq!(actual.spec, expected.spec);
    assert_eq!(actual.state, expected.state);
    assert_eq!(secrets(actual), secrets(expected));
    assert_eq!(actual.agent, expected.agent);
    assert_eq!(actual.last_event_seq, expected.last_event_seq);
    assert_eq!(actual.created_at, expected.created_at);
    assert_eq!(actual.updated_at, expected.updated_at);
}

/// Under a steady stream of writes a `PASSIVE` checkpoint never catches up with the log (the
/// writer appends while it copies), and the log only starts over once it has: here a reader
/// holds the checkpoint back as a concurrent writer would. The writer finishes the
/// checkpoint between two batches, so the log starts over instead of growing for ever.
#[tokio::test]
async fn the_log_starts_over_even_when_a_checkpoint_falls_behind() {
    let (db, store, record) = sqlite_with_a_workspace().await;
    let append = |seq| {
        vec![Write::AppendEvent(event(
            record.id,
            seq,
            "restart_requested",
        ))]
    };
    let mut reader = AnyConnection::connect(&db.url).await.expect("connect");
    reader.execute("BEGIN").await.expect("begin");
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut reader)
        .await
        .expect("read");
    for seq in 1..=40 {
        commit(&store, append(seq)).await;
    }
    let checkpoints = store.inner.checkpoints.clone().expect("a SQLite store");
    checkpoints.run().await.expect("checkpoint");
    assert!(
        checkpoints.catch_up.load(Ordering::Acquire),
        "after a pass over a non-empty log, the writer is asked to finish it"
    );
    reader.execute("COMMIT").await.expect("end of the read");
    // The writer finishes the checkpoint after this batch; the next one starts the log over:
    // the log then holds that batch's few frames, not the 40 or more written so far.
    commit(&store, append(41)).await;
    commit(&store, append(42)).await;
    let frames = log_frames(&db).await;
    assert!(
        frames < 20,
        "the log holds {frames} frames: it never started over"
    );
    store.close().await;
}

/// The database file is synced through the descriptor the store opened it with, never one
/// opened and closed for the occasion: closing a descriptor of a file drops every POSIX lock
/// the process holds on it, SQLite's included. Seen from outside: a checkpoint still syncs the
/// file after its name has moved.
#[tokio::test]
async fn checkpoints_sync_the_database_file_through_the_descriptor_the_store_holds() {
    let (db, store, _) = sqlite_with_an_event_in_the_log().await;
    let data = db.dir.path().join("data");
    std::fs::rename(data.join("steward.db"), data.join("moved.db")).expect("renamed");
    let checkpoints = store.inner.checkpoints.clone().expect("a SQLite store");
    checkpoints
        .run()
        .await
        .expect("the checkpoint synced the database file");
    assert!(
        checkpoints.catch_up.load(Ordering::Acquire),
        "a checkpoint that synced the file asks the writer to finish it"
    );
    assert!(store
        .inner
        .watermark
        .as_ref()
        .expect("a file")
        .broken()
        .is_none());
    store.close().await;
}

/// A checkpoint that cannot sync the database file has copied pages into it that may never
/// reach the disk (and Linux reports a failed write-back only once): the store stops vouching
/// for anything. Every later commit and read fails loudly, telling the operator to restart.
#[tokio::test]
async fn a_checkpoint_that_cannot_sync_the_database_file_breaks_the_store() {
    let (_db, store, record) = sqlite_with_an_event_in_the_log().await;
    // A pipe cannot be synced (EINVAL): a disk whose write-back failed.
    let (unsyncable, _other_end) = std::io::pipe().expect("pipe");
    let failing = store
        .inner
        .checkpoints
        .as_ref()
        .expect("a SQLite store")
        .syncing(Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(
            unsyncable,
        ))));
    let reason = failing.run().await.expect_err("the sync failed");
    assert!(
        reason.contains("cannot sync the database file during a checkpoint"),
        "{reason}"
    );
    assert!(
        !failing.catch_up.load(Ordering::Acquire),
        "a checkpoint whose pages may not be on disk asked for the writer to finish it"
    );
    let refused = store
        .enqueue(vec![Write::AppendEvent(event(
            record.id,
            2,
            "restart_requested",
        ))])
        .await;
    let Err(StoreError::Database(message)) = refused else {
        panic!("a store that can no longer vouch for its commits answered {refused:?}");
    };
    assert!(message.contains("restart the daemon"), "{message}");
    let read = store.load(record.id).await;
    let Err(StoreError::Database(message)) = read else {
        panic!("a store that can no longer vouch for what it holds answered a read: {read:?}");
    };
    assert!(message.contains("restart the daemon"), "{message}");
    store.close().await;
}

/// When the disk falls behind, commits wait for it and do not pile up: the writer hands the
/// sync thread a bounded number of batches, then waits; its queue fills, and new commits are
/// refused as overloaded. Nothing is answered before its sync has returned; once the disk
/// catches up, everything accepted is committed, in order.
#[tokio::test]
async fn when_the_disk_falls_behind_commits_wait_and_new_ones_are_refused() {
    let (db, store, record) = sqlite_with_a_workspace().await;
    let watermark = Arc::clone(store.inner.watermark.as_ref().expect("a database file"));
    let disk = watermark.disk.hold().await;
    let mut seq = 0;
    let mut append = || {
        seq += 1;
        store.enqueue(vec![Write::AppendEvent(event(
            record.id,
            seq,
            "restart_requested",
        ))])
    };
    // The first batch reaches the disk, and the sync thread waits there with it alone.
    let arrived = watermark.disk.arrived();
    let mut accepted = vec![Box::pin(append())];
    eventually("the first sync reaches the disk", || {
        watermark.disk.arrived() > arrived
    })
    .await;
    // One commit at a time, each taken by the writer as a batch of its own: those the sync
    // thread's channel holds, then one the writer cannot hand over.
    for _ in 0..=crate::durable::WAITING_BATCHES {
        accepted.push(Box::pin(append()));
        eventually("the writer takes the commit", || {
            crate::writer::queued(&store.inner) == 0
        })
        .await;
    }
    // The writer now waits for the disk: the next commit stays queued.
    accepted.push(Box::pin(append()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        crate::writer::queued(&store.inner),
        1,
        "the writer took a batch it could not hand to the sync thread"
    );
    // The queue fills, stays full, then refuses.
    let capacity = db.options().max_batch * crate::writer::QUEUED_BATCHES;
    for _ in 1..capacity {
        accepted.push(Box::pin(append()));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(crate::writer::queued(&store.inner), capacity);
    let refused = append().await;
    assert!(
        matches!(refused, Err(StoreError::Overloaded)),
        "{refused:?}"
    );
    for pending in &mut accepted {
        assert!(
            futures::poll!(pending).is_pending(),
            "a commit was answered before its sync returned"
        );
    }
    drop(disk);
    let count = i64::try_from(accepted.len()).expect("a small count");
    for pending in accepted {
        assert_eq!(pending.await.expect("commit"), CommitOutcome::Committed);
    }
    let stored = store
        .events(record.id, 0, count + 10)
        .await
        .expect("events");
    assert_eq!(
        stored.iter().map(|event| event.seq).collect::<Vec<_>>(),
        (1..=count).collect::<Vec<_>>(),
        "every accepted commit is stored, in order, and the refused one is not"
    );
    store.close().await;
}

/// Waits until `condition` holds (checked every millisecond), failing after 10 s with `what`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "still waiting after 10 s: {what}");
}

/// A SQLite store holding one bare workspace and, in its log, an event of it: a checkpoint has
/// something to copy back.
async fn sqlite_with_an_event_in_the_log() -> (TestDb, Store, WorkspaceRecord) {
    let (db, store, record) = sqlite_with_a_workspace().await;
    commit(
        &store,
        vec![Write::AppendEvent(event(record.id, 1, "restart_requested"))],
    )
    .await;
    (db, store, record)
}

/// A SQLite store holding one bare workspace.
async fn sqlite_with_a_workspace() -> (TestDb, Store, WorkspaceRecord) {
    let db = TestDb::sqlite();
    let store = db.open().await;
    let record = bare_workspace();
    commit(&store, vec![insert(&record)]).await;
    (db, store, record)
}

/// The frames in the SQLite log (asked through a checkpoint on a connection of its own).
async fn log_frames(db: &TestDb) -> i64 {
    let mut conn = AnyConnection::connect(&db.url).await.expect("connect");
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut conn)
        .await
        .expect("checkpoint");
    frames
}

/// Once a sync of the log has failed, what the disk holds is unknown: the store refuses every
/// later commit — without applying it — and every read, until the daemon is restarted.
#[tokio::test]
async fn a_store_whose_log_could_not_be_synced_refuses_commits_and_reads() {
    let (db, store, record) = sqlite_with_a_workspace().await;
    store
        .inner
        .watermark
        .as_ref()
        .expect("a SQLite file")
        .set_broken("cannot sync the write-ahead log: I/O error");
    let refused = store
        .commit(vec![Write::AppendEvent(event(
            record.id,
            1,
            "restart_requested",
        ))])
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Database(m)) if m.contains("restart the daemon")),
        "{refused:?}"
    );
    assert!(store.load(record.id).await.is_err(), "a read was answered");
    let mut conn = AnyConnection::connect(&db.url).await.expect("connect");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(events, 0, "a refused commit was applied");
    store.close().await;
}

/// A body's digest is an HMAC under a key of this installation: stable across restarts,
/// different under another key, never the bare SHA-256; its key file is 0600 beside the
/// secrets key.
#[tokio::test]
async fn idempotency_digests_are_keyed_by_a_private_key_file() {
    let db = TestDb::sqlite();
    let store = db.open().await;
    let body = br#"{"name":"w","secrets":{"TOKEN":"hunter2"}}"#;
    let digest = store.request_digest(body);
    store.close().await;
    let bare: String = <sha2::Sha256 as sha2::Digest>::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(digest.starts_with("hmac-sha256:"), "{digest}");
    assert!(!digest.contains(&bare));
    let key_file = db.key_path().with_file_name("idempotency.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let reopened = db.open().await;
    assert_eq!(reopened.request_digest(body), digest, "the key is kept");
    reopened.close().await;
    let elsewhere = TestDb::sqlite().open().await;
    assert_ne!(
        elsewhere.request_digest(body),
        digest,
        "another installation, another key"
    );
    elsewhere.close().await;
}

/// The database file, its write-ahead log and its shared memory are owner-only, whether the
/// store creates them or finds them readable by others.
#[tokio::test]
async fn database_files_are_owner_only() {
    let fresh = TestDb::sqlite();
    let found = TestDb::sqlite();
    let file = |db: &TestDb| PathBuf::from(crate::sqlite::sqlite_file(&db.url).expect("a file"));
    std::fs::create_dir_all(file(&found).parent().expect("dir")).expect("dir");
    std::fs::write(file(&found), b"").expect("an empty database");
    std::fs::set_permissions(file(&found), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for db in [&fresh, &found] {
        let store = db.open().await;
        let record = workspace();
        commit(&store, vec![insert(&record)]).await;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = file(db).into_os_string();
            path.push(suffix);
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{path:?}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{path:?}");
        }
        store.close().await;
    }
}
