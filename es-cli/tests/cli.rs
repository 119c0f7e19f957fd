//! The `es` binary run as a process against a fresh database: each
//! command's `--json` output checked against what the store holds, the
//! errors and their exit codes, `tail` following live appends, and
//! `rebuild --wait` ending with the read model a fresh run would build.

mod support;

use std::process::Stdio;
use std::time::Duration;

use es_core::EventStore as _;
use serde_json::{Value, json};
use support::{Fixture, eventually, interrupt, run};
use tokio::io::{AsyncBufReadExt as _, BufReader};

fn versions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["version"].as_u64().expect("a version"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_status_streams_and_stream_show_what_the_store_holds() {
    let fixture = Fixture::empty().await;

    let refused = run(fixture.es(&["status"])).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("run `es migrate`"), "{refused:?}");

    let migrated = fixture.json(&["migrate"]).await;
    assert_eq!(migrated["schema"], "es");
    assert!(
        migrated["applied"].as_array().is_some_and(|a| a.len() >= 7),
        "{migrated}"
    );
    let again = fixture.json(&["migrate"]).await;
    assert_eq!(again["applied"], json!([]));

    let shop = fixture.count("Shop-1", [1, 2, 3]).await;
    fixture.count("Shop-2", [4]).await;
    let other = fixture.count("Other-1", [5, 6]).await;

    let status = fixture.json(&["status"]).await;
    assert_eq!(status["events"], 6);
    assert_eq!(status["streams"], 3);
    assert_eq!(
        status["categories"],
        json!([{ "name": "Other", "streams": 1 }, { "name": "Shop", "streams": 2 }])
    );
    assert_eq!(status["head"], json!(other[1].position.to_string()));
    assert_eq!(status["held_back"]["events"], 0);
    assert_eq!(status["projections"], json!([]));

    let shops = fixture.json(&["streams", "--category", "Shop"]).await;
    let ids: Vec<&str> = shops
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["stream_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ["Shop-1", "Shop-2"]);
    assert_eq!(shops[0]["version"], 3);
    assert_eq!(shops[0]["category"], "Shop");
    let next = fixture
        .json(&["streams", "--after", "Other-1", "--limit", "1"])
        .await;
    assert_eq!(next[0]["stream_id"], "Shop-1");
    assert_eq!(next.as_array().map(Vec::len), Some(1));

    let page = fixture.json(&["stream", "Shop-1", "--from", "2"]).await;
    assert_eq!(page["version"], 3);
    assert_eq!(versions(&page), [2, 3]);
    let second = &page["events"][0];
    assert_eq!(second["event_id"], json!(shop[1].event_id));
    assert_eq!(second["event_type"], "Counted");
    assert_eq!(second["schema_version"], 1);
    assert_eq!(second["position"], json!(shop[1].position.to_string()));
    assert_eq!(second["data"], shop[1].data);
    let newest = fixture
        .json(&["stream", "Shop-1", "--backward", "--limit", "2"])
        .await;
    assert_eq!(versions(&newest), [3, 2]);

    // The readable forms name the same things.
    let table = run(fixture.es(&["streams"])).await;
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("STREAM"), "{}", table.stdout);
    assert!(table.stdout.contains("Shop-2") && table.stdout.contains("Other-1"));
    let shown = run(fixture.es(&["stream", "Shop-1"])).await;
    assert!(
        shown.stdout.contains("\"label\": \"count 2\""),
        "{}",
        shown.stdout
    );
    let summary = run(fixture.es(&["status"])).await;
    assert!(
        summary.stdout.contains("events      6"),
        "{}",
        summary.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_their_exit_code() {
    let fixture = Fixture::migrated().await;
    fixture.count("Shop-1", [1]).await;
    let cases: &[(&[&str], i32, &str)] = &[
        (&["stream", "Shop-404"], 1, "unknown stream \"Shop-404\""),
        (&["stream", "bad\u{7}id"], 2, "invalid stream id"),
        (&["stream", ""], 2, "invalid stream id"),
        (
            &["projection", "nowhere"],
            1,
            "unknown projection \"nowhere\"",
        ),
        (&["rebuild", "nowhere"], 1, "unknown projection \"nowhere\""),
        (&["parked", "nowhere"], 1, "unknown projection \"nowhere\""),
        (&["streams", "--limit", "0"], 2, "--limit"),
        (&["streams", "--after", "a\nb"], 2, "invalid stream id"),
        (&["tail", "--from", "yesterday"], 2, "invalid position"),
        (&["--schema", "Bad-Schema", "status"], 2, "--schema"),
        (&["console", "--bind", "0.0.0.0:0"], 2, "pass --token"),
        (&["frobnicate"], 2, "unrecognized subcommand"),
        (&["stream"], 2, "not provided: <ID>"),
        (&["streams", "--category", "a\u{1}"], 2, "invalid category"),
        (&["projection", ""], 2, "invalid projection name"),
        (&["tail", "--type", "\u{1b}[2J"], 2, "invalid event type"),
    ];
    for (args, code, message) in cases {
        let out = run(fixture.es(args)).await;
        assert_eq!(out.code, *code, "es {args:?}: {out:?}");
        assert!(out.stderr.contains(message), "es {args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("panicked"),
            "es {args:?}: {}",
            out.stderr
        );
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "es {args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.starts_with("es: "),
            "es {args:?}: {}",
            out.stderr
        );
    }

    // Nothing to connect to: bad usage, with the password hidden.
    let refused = "postgres://app:hunter2@127.0.0.1:1/shop";
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_es"));
    command
        .args(["--url", refused, "status"])
        .env_remove("DATABASE_URL");
    let out = run(command).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot connect to postgres://app:***@127.0.0.1:1/shop"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
    for url in ["not a url", "postgres://"] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_es"));
        command
            .args(["--url", url, "status"])
            .env_remove("DATABASE_URL");
        let out = run(command).await;
        assert_eq!(out.code, 2, "{url}: {out:?}");
        assert!(
            out.stderr.starts_with("es: cannot connect"),
            "{url}: {out:?}"
        );
    }
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_es"));
    command.arg("status").env_remove("DATABASE_URL");
    let out = run(command).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("pass --url or set DATABASE_URL"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_appends_made_after_it_started_until_interrupted() {
    let fixture = Fixture::migrated().await;
    fixture.count("Shop-1", [1]).await;
    let mut command = fixture.es(&["tail", "--category", "Shop", "--type", "Counted", "--json"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut tail = command.spawn().expect("starting es tail");
    let mut stderr = BufReader::new(tail.stderr.take().expect("stderr")).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .expect("es tail did not start")
        .expect("reading stderr");
    assert!(started.is_some_and(|line| line.contains("following the feed")));

    // Another category first: filtered out.
    fixture.count("Other-1", [7]).await;
    let appended = fixture.count("Shop-2", [8, 9]).await;
    let mut stdout = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    for expected in &appended {
        let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("es tail did not print the append")
            .expect("reading stdout")
            .expect("es tail ended");
        let event: Value = serde_json::from_str(&line).expect("one JSON event per line");
        assert_eq!(event["event_id"], json!(expected.event_id));
        assert_eq!(event["stream_id"], "Shop-2");
        assert_eq!(event["data"], expected.data);
    }
    interrupt(&tail).await;
    let status = tokio::time::timeout(Duration::from_secs(10), tail.wait())
        .await
        .expect("es tail did not stop on SIGINT")
        .expect("waiting for es tail");
    assert!(status.success(), "es tail exited with {status}");
    assert!(
        stdout.next_line().await.expect("reading").is_none(),
        "nothing after the appends"
    );

    // From the start: everything of the category, then live.
    let mut command = fixture.es(&["tail", "--from", "start", "--category", "Shop"]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut tail = command.spawn().expect("starting es tail");
    let mut stdout = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("es tail printed too little")
            .expect("reading")
            .expect("es tail ended");
        streams.push(
            line.split_whitespace()
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_default(),
        );
    }
    assert_eq!(streams, ["Shop-1@1", "Shop-2@1", "Shop-2@2"]);
    interrupt(&tail).await;
    assert!(tail.wait().await.expect("waiting").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_and_parked_events_are_shown_retried_and_discarded() {
    let fixture = Fixture::migrated().await;
    fixture
        .broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let handle = fixture.run_projection();
    fixture.count("Count-1", 1..=6).await;
    eventually("the odd events are parked", || async {
        handle
            .status()
            .await
            .is_ok_and(|s| s.lag == 0 && s.parked == 3)
    })
    .await;

    let list = fixture.json(&["projections"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let picky = &list[0];
    assert_eq!(picky["name"], "picky");
    assert_eq!(picky["state"], "running");
    assert_eq!(picky["parked"], 3);
    assert_eq!(picky["lag"], 0);
    assert!(
        picky["lease_holder"]["pid"]
            .as_i64()
            .is_some_and(|pid| pid > 0),
        "{picky}"
    );
    assert!(
        picky["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("odd number")),
        "{picky}"
    );
    let one = fixture.json(&["projection", "picky"]).await;
    assert_eq!(
        one["events_applied"], 3,
        "the parked events are not applied"
    );
    assert_eq!(one["event_types"], json!(["Counted"]));
    let shown = run(fixture.es(&["projection", "picky"])).await;
    assert!(
        shown.stdout.contains("lease holder      pid "),
        "{}",
        shown.stdout
    );

    let parked = fixture.json(&["parked", "picky"]).await;
    let ids: Vec<i64> = parked
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["id"].as_i64().expect("an id"))
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(parked[0]["stream_id"], "Count-1");
    assert_eq!(parked[0]["version"], 1);
    assert!(
        parked[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("odd number 1"))
    );

    // Fixed: a retry applies the event and takes it off the list.
    fixture
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let retried = fixture
        .json(&["parked", "picky", "retry", &ids[0].to_string()])
        .await;
    assert_eq!(retried["ids"], json!([ids[0]]));
    eventually("the retried event applies", || async {
        fixture.seen().await == [1, 2, 4, 6]
    })
    .await;

    discard_asks_first(&fixture, ids[1]).await;

    let all = fixture.json(&["parked", "picky", "retry", "--all"]).await;
    assert_eq!(all["ids"], json!([ids[2]]));
    eventually("every parked event is applied", || async {
        fixture.seen().await == [1, 2, 4, 5, 6]
    })
    .await;
    assert_eq!(fixture.json(&["parked", "picky"]).await, json!([]));
    handle.stop().await.expect("stopping the runner");
    let stopped = fixture.json(&["projection", "picky"]).await;
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["lease_holder"], Value::Null);
}

/// A discard asks first: no answer is a no, `y` discards, and a parked
/// event discarded is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_delete_close_a_stream_after_asking() {
    let fixture = Fixture::migrated().await;
    let events = fixture.count("Shop-1", [1, 2]).await;

    let archived = fixture.json(&["archive", "Shop-1", "--yes"]).await;
    assert_eq!(archived["version"], 3, "{archived}");
    assert_eq!(archived["already"], false);
    let again = fixture.json(&["archive", "Shop-1", "--yes"]).await;
    assert_eq!(
        (again["version"].clone(), again["already"].clone()),
        (json!(3), json!(true))
    );
    let read = run(fixture.es(&["stream", "Shop-1"])).await;
    assert_eq!(read.code, 1, "{read:?}");
    assert!(
        read.stderr.contains("is archived (at version 3)"),
        "{read:?}"
    );

    let unconfirmed = run(fixture.es(&["delete", "Shop-1"])).await;
    assert_eq!(unconfirmed.code, 1, "{unconfirmed:?}");
    assert!(
        unconfirmed
            .stderr
            .contains("not confirmed, nothing deleted"),
        "{unconfirmed:?}"
    );
    let stale = run(fixture.es(&["delete", "Shop-1", "--expected-version", "2", "--yes"])).await;
    assert_eq!(stale.code, 1, "{stale:?}");
    let deleted = run(fixture.es(&["delete", "Shop-1", "--expected-version", "3", "--yes"])).await;
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(
        deleted
            .stdout
            .starts_with("deleted stream Shop-1 at version 4"),
        "{deleted:?}"
    );
    let read = run(fixture.es(&["stream", "Shop-1"])).await;
    assert!(read.stderr.contains("was deleted at version 4"), "{read:?}");
    // The events stay in the feed, followed by the markers.
    let feed = fixture
        .store
        .read_all(es_core::Position::START, &es_core::FeedFilter::all(), 10)
        .await
        .expect("the feed");
    let types: Vec<&str> = feed.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Counted", "Counted", "$archived", "$deleted"]);
    assert_eq!(feed[0].event_id, events[0].event_id);
    let bad = run(fixture.es(&["delete", "no-such\u{1}", "--yes"])).await;
    assert_eq!(bad.code, 2, "{bad:?}");
}

async fn discard_asks_first(fixture: &Fixture, id: i64) {
    let id = id.to_string();
    let unconfirmed = run(fixture.es(&["parked", "picky", "discard", &id])).await;
    assert_eq!(unconfirmed.code, 1, "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("not confirmed"),
        "{unconfirmed:?}"
    );
    assert_eq!(store_parked(fixture).await, 2);
    let mut confirmed = fixture.es(&["parked", "picky", "discard", &id]);
    confirmed
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = confirmed.spawn().expect("starting es");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"y\n").await.expect("answering");
    }
    let out = child.wait_with_output().await.expect("waiting");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(store_parked(fixture).await, 1);
    let gone = run(fixture.es(&["parked", "picky", "discard", &id, "--yes"])).await;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("has no parked event"), "{gone:?}");
}

async fn store_parked(fixture: &Fixture) -> usize {
    fixture
        .store
        .parked_events("picky")
        .await
        .expect("listing parked events")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_wait_shows_progress_and_ends_with_the_read_model_of_a_fresh_run() {
    let fixture = Fixture::migrated().await;
    let handle = fixture.run_projection();
    for chunk in (1..=1_000).collect::<Vec<i64>>().chunks(100) {
        fixture.count("Count-1", chunk.iter().copied()).await;
    }
    eventually("the projection catches up", || async {
        handle.status().await.is_ok_and(|s| s.lag == 0)
    })
    .await;
    // Damage the read model: a rebuild must bring it back.
    sqlx::query("DELETE FROM seen WHERE n > 500")
        .execute(fixture.store.pool())
        .await
        .expect("damaging the read model");

    let out = run(fixture.es(&["rebuild", "picky", "--wait"])).await;
    assert_eq!(out.code, 0, "{out:?}");
    // Without a terminal: plain progress lines on stderr.
    assert!(
        out.stderr
            .lines()
            .any(|line| line.contains("picky") && line.contains(" events, ")),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .starts_with("rebuilt projection picky: 1000 events in "),
        "{}",
        out.stdout
    );
    assert_eq!(fixture.resets.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(fixture.seen().await, (1..=1_000).collect::<Vec<i64>>());
    let status = handle.status().await.expect("status");
    assert_eq!((status.events_applied, status.lag), (1_000, 0));

    // Without --wait it only asks; --json says what it did.
    let asked = fixture.json(&["rebuild", "picky"]).await;
    assert_eq!(
        asked,
        json!({ "projection": "picky", "requested": true, "finished": false, "events": null, "seconds": null })
    );
    eventually("the second rebuild runs", || async {
        fixture.resets.load(std::sync::atomic::Ordering::SeqCst) == 2
    })
    .await;
    let waited = fixture.json(&["rebuild", "picky", "--wait"]).await;
    assert_eq!(waited["finished"], true);
    assert_eq!(waited["events"], 1_000);
    handle.stop().await.expect("stopping the runner");
}
