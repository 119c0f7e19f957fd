//! What the `es` tests share: a fresh database with a store and a
//! projection runner in this process, the `es` binary run as a process, and
//! (in `browser.rs`) a headless Chromium driven over `WebDriver`.

#![allow(dead_code, unreachable_pub)]

pub mod browser;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use es_core::{
    BoxError, Dispatch, EventStore as _, ExpectedVersion, NewEvent, Projection, RecordedEvent,
    Reset, StreamId,
};
use es_postgres::{
    ErrorPolicy, PgEventStore, PgStoreOptions, ProjectionHandle, ProjectionRunner, RunnerOptions,
};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio::process::{Child, Command};

/// Records each event's `n` in `seen`; refuses events whose `n` is odd
/// while `broken` is set; counts its resets.
pub struct Picky {
    pub broken: Arc<AtomicBool>,
    pub resets: Arc<AtomicU64>,
}

impl Projection for Picky {
    const NAME: &'static str = "picky";
    const EVENT_TYPES: &'static [&'static str] = &["Counted"];
}

impl Dispatch<PgConnection> for Picky {
    async fn dispatch(&self, event: &RecordedEvent, tx: &mut PgConnection) -> Result<(), BoxError> {
        let n = event.data["n"].as_i64().ok_or("no n")?;
        if n % 2 == 1 && self.broken.load(Ordering::SeqCst) {
            return Err(format!("odd number {n}").into());
        }
        sqlx::query("INSERT INTO seen (n) VALUES ($1)")
            .bind(n)
            .execute(tx)
            .await?;
        Ok(())
    }
}

impl Reset<PgConnection> for Picky {
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("TRUNCATE seen").execute(tx).await?;
        self.resets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A fresh database, its store, and the switches of its projection.
pub struct Fixture {
    pub url: String,
    pub store: PgEventStore,
    pub broken: Arc<AtomicBool>,
    pub resets: Arc<AtomicU64>,
}

impl Fixture {
    /// A fresh, empty database (not migrated).
    pub async fn empty() -> Self {
        let postgres = es_postgres_local::shared()
            .await
            .expect("starting PostgreSQL");
        let url = postgres
            .create_database()
            .await
            .expect("creating a database");
        let store = PgEventStore::connect(&url, PgStoreOptions::default())
            .await
            .expect("connecting");
        Self {
            url,
            store,
            broken: Arc::new(AtomicBool::new(false)),
            resets: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A fresh database, migrated, with the read model's table.
    pub async fn migrated() -> Self {
        let fixture = Self::empty().await;
        fixture.store.migrate().await.expect("migrating");
        sqlx::raw_sql("CREATE TABLE seen (n bigint PRIMARY KEY)")
            .execute(fixture.store.pool())
            .await
            .expect("creating the read model");
        fixture
    }

    /// Starts the `picky` runner in this process.
    pub fn run_projection(&self) -> ProjectionHandle<Picky> {
        let options = RunnerOptions::default()
            .batch_size(50)
            .standby_interval(Duration::from_millis(50))
            .error_policy(ErrorPolicy::park_after(0).backoff(Duration::from_millis(5)));
        let picky = Picky {
            broken: Arc::clone(&self.broken),
            resets: Arc::clone(&self.resets),
        };
        ProjectionRunner::new(self.store.clone(), picky, options).spawn()
    }

    /// Appends `Counted` events with these `n` to `stream`, with metadata
    /// naming `correlation`.
    pub async fn count(
        &self,
        stream: &str,
        numbers: impl IntoIterator<Item = i64>,
    ) -> Vec<RecordedEvent> {
        let stream = StreamId::new(stream).expect("a valid stream id");
        let events: Vec<NewEvent> = numbers
            .into_iter()
            .map(|n| NewEvent::new("Counted", json!({ "n": n, "label": format!("count {n}") })))
            .collect();
        let count = events.len();
        self.store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("appending");
        let mut all = self
            .store
            .read_stream(&stream, es_core::StreamRead::backward().limit(count))
            .await
            .expect("reading back");
        all.reverse();
        all
    }

    /// The `n` of every row of the read model, in order.
    pub async fn seen(&self) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM seen ORDER BY n")
            .fetch_all(self.store.pool())
            .await
            .expect("reading the read model")
    }

    /// `es` with `--url` set to this database.
    pub fn es(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_es"));
        command
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("ES_CONSOLE_TOKEN")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `es args`, expecting success, and parses its JSON output.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = run(self.es(&all)).await;
        assert_eq!(out.code, 0, "es {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("es {args:?} printed no JSON ({e}): {}", out.stdout))
    }
}

/// What a finished `es` process printed, and its exit code.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end (at most a minute).
pub async fn run(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("starting es");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("es did not finish within a minute")
        .expect("waiting for es");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sends SIGINT (what Ctrl-C sends) to `child`.
pub async fn interrupt(child: &Child) {
    let pid = child.id().expect("the process is running");
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await
        .expect("running kill");
    assert!(status.success(), "kill -INT {pid} failed");
}

/// Polls `check` every 50 ms for up to 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where tests leave screenshots: `target/es-cli/`.
pub fn artifacts() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let dir = target.join("es-cli");
    std::fs::create_dir_all(&dir).expect("creating target/es-cli");
    dir
}
