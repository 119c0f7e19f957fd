//! A local Postgres server for tests and examples.
//!
//! [`shared`] hands out one [`LocalPostgres`] per process:
//!
//! 1. When the environment variable `DATABASE_URL` is set (and not empty),
//!    that server is used as it is; no cluster is started. [`LocalPostgres::url`]
//!    is then `DATABASE_URL` itself.
//! 2. Otherwise a throwaway cluster is started from the local Postgres server
//!    binaries: `initdb` and `pg_ctl` are looked up on `PATH`, then under
//!    `/usr/lib/postgresql/*/bin` (highest version first). The cluster lives
//!    in a fresh temporary directory under `/tmp` (data directory, Unix socket
//!    and server log), listens on a free TCP port of `127.0.0.1`, accepts
//!    every connection without a password (`trust`) for the superuser
//!    `postgres`, and trades durability for speed (`fsync`,
//!    `synchronous_commit` and `full_page_writes` are off). `max_connections`
//!    is 300, as tests open many pools.
//!
//! Postgres refuses to run as root: when the process runs as root, the
//! server binaries are run as the `postgres` system user (with `runuser`, or
//! `su` where `runuser` is missing) and the temporary directory is handed
//! over to that user.
//!
//! # Cleanup
//!
//! Rust never drops statics, so the shared cluster is not stopped by a
//! destructor. Instead, a small watchdog shell is started with the cluster: it
//! waits for end-of-file on a pipe whose only writer is this process. However
//! the process ends (normal exit, panic, abort, `SIGKILL`), the kernel closes
//! the pipe; the watchdog then stops the server (`pg_ctl stop -m immediate`)
//! and removes the temporary directory. The watchdog runs in its own process
//! group and ignores the usual termination signals, so a Ctrl-C sent to the
//! test's process group does not stop it before it has cleaned up.
//!
//! # A private cluster that can be stopped and started
//!
//! [`private`] starts a throwaway cluster of the caller's own, never shared
//! and never `DATABASE_URL`, for tests of what happens when the server goes
//! away: [`LocalPostgres::stop`] shuts it down and [`LocalPostgres::start`]
//! starts it again on the same port, so pools and URLs keep working once it
//! is back. Such a cluster has its own watchdog like the shared one, and is
//! removed when the `LocalPostgres` is dropped or the process ends, whether
//! the server is running then or not.
//!
//! # A hot standby, and a transaction pooler
//!
//! [`replicated`] starts a throwaway primary and a hot standby streaming
//! from it (always fresh clusters: `DATABASE_URL` is ignored);
//! [`Replicated::wait_for_replay`] waits until the standby has caught up.
//! [`pooler`] starts the connection pooler `pgbouncer` in transaction pooling
//! mode in front of a server (installing the Debian package when it is
//! missing and the process runs as root), and [`shared_pooler`] one per process in front of
//! [`shared`]; [`Pooler::url`] maps a database URL to the same database
//! through the pooler. Both have watchdogs like the clusters'.
//!
//! # Databases
//!
//! Each test should take a fresh database from [`LocalPostgres::create_database`].
//! On the throwaway cluster they disappear with it. On a server given by
//! `DATABASE_URL` they are **left in place** (their names start with
//! `es_test_`, so they are easy to find and drop by hand).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let postgres = es_postgres_local::shared().await?;
//! let url = postgres.create_database().await?;
//! let pool = sqlx::PgPool::connect(&url).await?;
//! # drop(pool);
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::{Connection as _, Executor as _};

mod pooler;
mod replica;

pub use pooler::{Pooler, pooler, shared_pooler};
pub use replica::{Replicated, replicated};

/// The environment variable naming an existing server to use instead of a
/// throwaway cluster.
const DATABASE_URL: &str = "DATABASE_URL";

/// The superuser created by `initdb` and the system user that runs the server
/// when this process runs as root.
const SUPERUSER: &str = "postgres";

/// How many ports are tried when the server cannot bind the one picked.
const START_ATTEMPTS: u32 = 5;

/// Seconds `pg_ctl` waits for the server to start.
const START_TIMEOUT_SECS: &str = "30";

/// How many lines of the server log an error shows.
const LOG_TAIL_LINES: usize = 40;

/// The process-wide server, started at most once.
static SHARED: OnceLock<Result<LocalPostgres, LocalError>> = OnceLock::new();

/// Numbers the databases created by this process.
static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Numbers the server logs, so that a restart does not overwrite the log of
/// an earlier start.
static LOG_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a local Postgres server could not be provided.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// `DATABASE_URL` is not set and no Postgres server binaries were found.
    #[error(
        "DATABASE_URL is not set and no PostgreSQL server binaries (initdb, pg_ctl) were found on \
         PATH or under /usr/lib/postgresql/*/bin: install PostgreSQL server binaries \
         (Debian: apt-get install postgresql) or set DATABASE_URL"
    )]
    BinariesNotFound,

    /// A file or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },

    /// A command needed to set up the cluster (such as `initdb`) failed.
    #[error("`{command}` failed ({status}):\n{output}{}", hint_suffix(hint))]
    Command {
        /// The command line that failed.
        command: String,
        /// How it ended.
        status: String,
        /// What it wrote to standard output and standard error.
        output: String,
        /// A hint at the cause, or empty.
        hint: String,
    },

    /// The server did not start.
    #[error(
        "PostgreSQL did not start ({attempts} attempt(s)): {output}\n\
         --- last lines of the server log ---\n{log_tail}"
    )]
    Start {
        /// How many times starting was tried.
        attempts: u32,
        /// What `pg_ctl start` wrote on the last attempt.
        output: String,
        /// The last lines of the server log of the last attempt (the log
        /// itself is removed with the cluster).
        log_tail: String,
    },

    /// [`LocalPostgres::stop`] or [`LocalPostgres::start`] was called on a
    /// server that does not come from [`private`].
    #[error(
        "only a private cluster (es_postgres_local::private) can be stopped and started; \
         this server is shared by the whole process or named by DATABASE_URL"
    )]
    NotPrivate,

    /// The standby of [`replicated`] did not replay the primary's WAL in
    /// time ([`Replicated::wait_for_replay`]).
    #[error(
        "the standby did not replay the primary's WAL up to {target} within {waited_secs} s \
         (it replayed up to {replayed})\n\
         --- last lines of the standby's server log ---\n{log_tail}"
    )]
    Replay {
        /// The primary's WAL position to reach.
        target: String,
        /// The standby's last replayed position when giving up.
        replayed: String,
        /// How long it was waited for.
        waited_secs: u64,
        /// The last lines of the standby's server log.
        log_tail: String,
    },

    /// PgBouncer is missing and this process cannot install it.
    #[error(
        "PgBouncer (pgbouncer) was not found on PATH or at /usr/sbin/pgbouncer, and {why}: \
         install the `pgbouncer` package (Debian: apt-get install pgbouncer)"
    )]
    PgbouncerNotFound {
        /// Why it was not installed.
        why: String,
    },

    /// PgBouncer did not start, or did not accept connections in time.
    #[error(
        "PgBouncer did not start ({attempts} attempt(s)): {reason}\n\
         --- last lines of the PgBouncer log ---\n{log_tail}"
    )]
    PoolerStart {
        /// How many times starting was tried.
        attempts: u32,
        /// What went wrong on the last attempt.
        reason: String,
        /// The last lines of PgBouncer's log of the last attempt (the log
        /// itself is removed with the pooler's directory).
        log_tail: String,
    },

    /// A statement sent to the server failed.
    #[error("{action}: {source}")]
    Sql {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: Arc<sqlx::Error>,
    },
}

/// Renders a [`LocalError::Command`] hint on a line of its own.
fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\nhint: {hint}")
    }
}

impl LocalError {
    fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source: Arc::new(source),
        }
    }

    fn sql(action: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Sql {
            action: action.into(),
            source: Arc::new(source),
        }
    }
}

/// Returns the process-wide local Postgres server, starting it on first use.
///
/// Uses the server named by `DATABASE_URL` when that variable is set; starts
/// a throwaway cluster otherwise (see the [module documentation](self)). The
/// outcome of the first call, success or failure, is kept for the rest of the
/// process. Safe to call from any number of tests and Tokio runtimes at once;
/// the slow start-up runs on Tokio's blocking thread pool when called within
/// a Tokio runtime.
///
/// # Errors
///
/// Fails when `DATABASE_URL` is unset and the Postgres server binaries are
/// missing, or when the cluster cannot be created or started; the error says
/// what to install or includes the output of the failing command or the tail
/// of the server log.
pub async fn shared() -> Result<&'static LocalPostgres, LocalError> {
    let outcome = match SHARED.get() {
        Some(outcome) => outcome,
        None => match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(|| SHARED.get_or_init(LocalPostgres::from_env))
                .await
                .map_err(|error| {
                    LocalError::io(
                        "starting the local PostgreSQL server",
                        io::Error::other(error.to_string()),
                    )
                })?,
            Err(_) => SHARED.get_or_init(LocalPostgres::from_env),
        },
    };
    outcome.as_ref().map_err(Clone::clone)
}

/// Starts a throwaway cluster of the caller's own, which it may stop and
/// start (see [`LocalPostgres::stop`]); `DATABASE_URL` is ignored.
///
/// The cluster is set up like the shared one (see the
/// [module documentation](self)), has its own watchdog, and is removed when
/// the returned value is dropped or the process ends. Dropping it blocks
/// until the server has stopped; in async code, drop it with
/// `tokio::task::spawn_blocking`.
///
/// # Errors
///
/// As [`shared`] when it starts a cluster: the server binaries are missing,
/// or the cluster cannot be created or started.
pub async fn private() -> Result<LocalPostgres, LocalError> {
    let start = || LocalPostgres::start_cluster(true, "");
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(start).await.map_err(|error| {
            LocalError::io(
                "starting a private PostgreSQL cluster",
                io::Error::other(error.to_string()),
            )
        })?,
        Err(_) => start(),
    }
}

/// A Postgres server for tests: either the one named by `DATABASE_URL` or
/// a throwaway cluster owned by this process.
///
/// Obtained from [`shared`] or [`private`]. Dropping a `LocalPostgres` that
/// owns a cluster stops the server and removes its directory.
#[derive(Debug)]
pub struct LocalPostgres {
    /// URL of the `postgres` database (or `DATABASE_URL` as given).
    admin_url: String,
    /// The throwaway cluster, when no `DATABASE_URL` was given; kept for its
    /// `Drop`.
    cluster: Option<Cluster>,
}

impl LocalPostgres {
    /// The URL of the administrative database: `postgres` on the throwaway
    /// cluster, such as `postgres://postgres@127.0.0.1:41234/postgres`, or
    /// `DATABASE_URL` as given.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.admin_url
    }

    /// Creates a new, empty database with a unique name (such as
    /// `es_test_4242_7_1f2e3d4c`) and returns its connection URL.
    ///
    /// Databases on a server named by `DATABASE_URL` are not dropped
    /// afterwards.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached with [`url`](Self::url) or
    /// refuses `CREATE DATABASE`.
    pub async fn create_database(&self) -> Result<String, LocalError> {
        let name = unique_database_name();
        let mut connection = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .map_err(|error| LocalError::sql(format!("connecting to {}", self.admin_url), error))?;
        let statement = format!("CREATE DATABASE \"{name}\"");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match connection.execute(statement.as_str()).await {
                Ok(_) => break,
                // "source database template1 is being accessed by other users":
                // some other client is briefly connected to the template.
                Err(sqlx::Error::Database(error))
                    if error.code().as_deref() == Some("55006") && attempt < 10 =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    return Err(LocalError::sql(format!("creating database {name}"), error));
                }
            }
        }
        // The database exists; a failure to say goodbye does not matter.
        let _ = connection.close().await;
        Ok(with_database(&self.admin_url, &name))
    }

    /// Shuts the server of a [`private`] cluster down: a fast shutdown that
    /// ends every session (their open transactions roll back) and keeps
    /// every committed transaction. Returns once the server has stopped;
    /// stopping a stopped server does nothing.
    ///
    /// An immediate stop (a simulated crash) is not offered: the cluster
    /// runs with `synchronous_commit = off`, so a crash could lose commits
    /// that were already acknowledged, which is not a fault worth testing.
    ///
    /// # Errors
    ///
    /// [`LocalError::NotPrivate`] for a server that is not from
    /// [`private`]; [`LocalError::Command`] when `pg_ctl stop` fails.
    pub async fn stop(&self) -> Result<(), LocalError> {
        let control = self.control()?;
        run_blocking("stopping the private cluster", move || control.stop()).await
    }

    /// Starts the server of a [`private`] cluster again, on the port it had,
    /// so [`url`](Self::url) and the URLs of its databases stay valid.
    /// Returns once it accepts connections; starting a running server does
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`LocalError::NotPrivate`] for a server that is not from
    /// [`private`]; [`LocalError::Start`] when the server does not start
    /// (for example because another process took the port meanwhile).
    pub async fn start(&self) -> Result<(), LocalError> {
        let control = self.control()?;
        run_blocking("starting the private cluster", move || {
            control.start_on(Some(control.port)).map(drop)
        })
        .await
    }

    fn control(&self) -> Result<Control, LocalError> {
        match &self.cluster {
            Some(cluster) if cluster.private => Ok(cluster.control()),
            _ => Err(LocalError::NotPrivate),
        }
    }

    /// Uses `DATABASE_URL` when set, starts a throwaway cluster otherwise.
    fn from_env() -> Result<Self, LocalError> {
        match std::env::var(DATABASE_URL) {
            Ok(url) if !url.trim().is_empty() => Ok(Self {
                admin_url: url.trim().to_owned(),
                cluster: None,
            }),
            _ => Self::start_cluster(false, ""),
        }
    }

    /// Starts a throwaway cluster, ignoring `DATABASE_URL`, with
    /// `extra_settings` appended to its `postgresql.conf`.
    fn start_cluster(private: bool, extra_settings: &str) -> Result<Self, LocalError> {
        let binaries = find_binaries().ok_or(LocalError::BinariesNotFound)?;
        let cluster = Cluster::start(&binaries, private, extra_settings)?;
        Ok(Self {
            admin_url: admin_url(cluster.port),
            cluster: Some(cluster),
        })
    }
}

/// Runs blocking `work` off the async runtime when there is one.
async fn run_blocking<F, T>(what: &str, work: F) -> Result<T, LocalError>
where
    F: FnOnce() -> Result<T, LocalError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(work)
            .await
            .map_err(|error| LocalError::io(what, io::Error::other(error.to_string())))?,
        Err(_) => work(),
    }
}

/// A unique database name: process id, a counter and a random part (so that
/// processes sharing a `DATABASE_URL` server, even across reboots, don't clash).
fn unique_database_name() -> String {
    let counter = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("es_test_{}_{counter}_{}", std::process::id(), &random[..8])
}

/// The URL of the `postgres` database of a throwaway cluster on `port`.
fn admin_url(port: u16) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres")
}

/// The database (path) of a `postgres://` URL, still percent-encoded as in
/// the URL; `None` when the URL names none.
fn database_of(url: &str) -> Option<&str> {
    let base = url.find('?').map_or(url, |at| &url[..at]);
    let authority = base.find("://").map_or(0, |at| at + 3);
    let path = &base[authority..];
    let database = &path[path.find('/')? + 1..];
    (!database.is_empty()).then_some(database)
}

/// Replaces the database (path) of a `postgres://` URL, keeping the user,
/// password, host, port and query parameters.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.find('?').map_or((url, ""), |at| url.split_at(at));
    let authority = base.find("://").map_or(0, |at| at + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    format!("{}/{database}{query}", &base[..path])
}

/// The directory holding `initdb` and `pg_ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    fn pg_ctl(&self) -> PathBuf {
        self.dir.join("pg_ctl")
    }
}

/// Looks for `initdb` and `pg_ctl` side by side on `PATH`, then under
/// `/usr/lib/postgresql/<version>/bin`, highest version first.
fn find_binaries() -> Option<Binaries> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(versioned_dirs(Path::new("/usr/lib/postgresql")))
        .find(|dir| is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl")))
        .map(|dir| Binaries { dir })
}

/// The `bin` directories under `root/<version>/`, highest version first.
fn versioned_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = version_key(name.to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// `"9.6"` → `[9, 6]`; `None` for names that are not versions.
fn version_key(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs with effective user id 0.
fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:\t<real>\t<effective>\t<saved>\t<filesystem>"
        if let Some(effective) = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
        {
            return effective == "0";
        }
    }
    Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// How the server binaries are run: directly, or as the `postgres` user when
/// this process is root.
#[derive(Debug, Clone, Copy)]
enum RunAs {
    Myself,
    /// `runuser -u postgres -- ...`
    Runuser,
    /// `su postgres -s /bin/sh -c '...'`, where `runuser` is missing.
    Su,
}

impl RunAs {
    fn detect() -> Self {
        if !running_as_root() {
            Self::Myself
        } else if find_on_path("runuser").is_some() {
            Self::Runuser
        } else {
            Self::Su
        }
    }

    fn is_root(self) -> bool {
        !matches!(self, Self::Myself)
    }

    /// The argument vector that runs `program args...` as the right user.
    fn argv(self, program: &Path, args: &[&str]) -> Vec<String> {
        let program = program.to_string_lossy().into_owned();
        match self {
            Self::Myself => std::iter::once(program)
                .chain(args.iter().map(|&arg| arg.to_owned()))
                .collect(),
            Self::Runuser => ["runuser", "-u", SUPERUSER, "--"]
                .into_iter()
                .map(str::to_owned)
                .chain(std::iter::once(program))
                .chain(args.iter().map(|&arg| arg.to_owned()))
                .collect(),
            Self::Su => {
                let mut line = String::from("exec ");
                line.push_str(&shell_quote(&program));
                for arg in args {
                    line.push(' ');
                    line.push_str(&shell_quote(arg));
                }
                ["su", SUPERUSER, "-s", "/bin/sh", "-c", &line]
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            }
        }
    }

    fn command(self, program: &Path, args: &[&str], dir: &Path) -> (Command, String) {
        let words = self.argv(program, args);
        let mut command = Command::new(&words[0]);
        command
            .args(&words[1..])
            // The server user may not be able to enter our working directory.
            .current_dir(dir)
            .stdin(Stdio::null());
        (command, words.join(" "))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs a command to completion, failing unless it exits successfully.
fn run(mut command: Command, line: &str, hint: &str) -> Result<Output, LocalError> {
    let output = command
        .output()
        .map_err(|error| LocalError::io(format!("running `{line}`"), error))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LocalError::Command {
            command: line.to_owned(),
            status: output.status.to_string(),
            output: combined_output(&output),
            hint: hint.to_owned(),
        })
    }
}

fn combined_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim_end());
    }
    text
}

/// A throwaway cluster in a temporary directory, with its watchdog.
#[derive(Debug)]
struct Cluster {
    /// The temporary directory: `data/`, the Unix socket and the logs.
    dir: PathBuf,
    port: u16,
    run_as: RunAs,
    binaries: Binaries,
    /// Whether it comes from [`private`], and so may be stopped and started.
    private: bool,
    /// Dropping this stops the server and removes the directory.
    _watchdog: Watchdog,
}

/// What it takes to stop and start a cluster's server, detached from the
/// [`Cluster`] so that it can move to a blocking thread.
#[derive(Debug, Clone)]
struct Control {
    dir: PathBuf,
    port: u16,
    run_as: RunAs,
    binaries: Binaries,
}

impl Cluster {
    /// Starts a cluster set up by [`init`](Self::init), with
    /// `extra_settings` appended to its `postgresql.conf` (later lines win).
    fn start(binaries: &Binaries, private: bool, extra_settings: &str) -> Result<Self, LocalError> {
        let mut cluster = Self::create(binaries, private)?;
        // On any error below, dropping `cluster` stops and removes it.
        cluster.init(binaries, extra_settings)?;
        cluster.port = cluster.control().start_on(None)?;
        Ok(cluster)
    }

    /// A fresh temporary directory (with no `data/` yet) and the watchdog that
    /// stops the server of `data/` and removes the directory.
    fn create(binaries: &Binaries, private: bool) -> Result<Self, LocalError> {
        let run_as = RunAs::detect();
        let pg_ctl = binaries.pg_ctl();
        let (dir, watchdog) = watched_temp_dir("es-postgres-", |dir| {
            let data = dir.join("data");
            run_as.argv(
                &pg_ctl,
                &[
                    "stop",
                    "-D",
                    &data.to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "10",
                ],
            )
        })?;
        Ok(Self {
            dir,
            port: 0,
            run_as,
            binaries: binaries.clone(),
            private,
            _watchdog: watchdog,
        })
    }

    fn control(&self) -> Control {
        Control {
            dir: self.dir.clone(),
            port: self.port,
            run_as: self.run_as,
            binaries: self.binaries.clone(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs `initdb` and writes the server settings, then `extra_settings`.
    fn init(&self, binaries: &Binaries, extra_settings: &str) -> Result<(), LocalError> {
        let run_as = self.run_as;
        hand_over(run_as, &self.dir)?;
        let data = self.data();
        let data = data.to_string_lossy();
        let (command, line) = run_as.command(
            &binaries.initdb(),
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            &self.dir,
        );
        run(command, &line, "")?;

        let settings = format!(
            "\n# es-postgres throwaway cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             {extra_settings}",
            self.dir.to_string_lossy().replace('\'', "''"),
        );
        append_settings(&self.data(), &settings)
    }
}

/// Appends `settings` to `data/postgresql.conf`; later lines win.
fn append_settings(data: &Path, settings: &str) -> Result<(), LocalError> {
    let conf = data.join("postgresql.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut file| io::Write::write_all(&mut file, settings.as_bytes()))
        .map_err(|error| LocalError::io(format!("writing {}", conf.display()), error))
}

/// Hands `dir` over to the `postgres` user when this process is root, so that
/// the server binaries, run as that user, can write there.
fn hand_over(run_as: RunAs, dir: &Path) -> Result<(), LocalError> {
    if !run_as.is_root() {
        return Ok(());
    }
    let mut command = Command::new("chown");
    command
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .stdin(Stdio::null());
    let line = format!("chown -R postgres:postgres {}", dir.display());
    run(
        command,
        &line,
        "PostgreSQL and PgBouncer refuse to run as root, so they are run as the `postgres` \
         system user, which the PostgreSQL server packages (and pgbouncer's dependency \
         postgresql-common) create",
    )
    .map(drop)
}

impl Control {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Whether the server of the data directory is running.
    fn is_running(&self) -> Result<bool, LocalError> {
        let data = self.data();
        let (command, line) = self.run_as.command(
            &self.binaries.pg_ctl(),
            &["status", "-D", &data.to_string_lossy()],
            &self.dir,
        );
        let mut command = command;
        let status = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|error| LocalError::io(format!("running `{line}`"), error))?;
        // pg_ctl status: 0 running, 3 not running (4: no data directory).
        Ok(status.success())
    }

    /// A fast shutdown of the server, waiting until it has stopped.
    fn stop(&self) -> Result<(), LocalError> {
        if !self.is_running()? {
            return Ok(());
        }
        let data = self.data();
        let (command, line) = self.run_as.command(
            &self.binaries.pg_ctl(),
            &[
                "stop",
                "-D",
                &data.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "-t",
                START_TIMEOUT_SECS,
            ],
            &self.dir,
        );
        run(command, &line, "").map(drop)
    }

    /// Starts the server on `port`, or on a free port when `None`, retrying
    /// on port clashes; returns the port.
    fn start_on(&self, fixed: Option<u16>) -> Result<u16, LocalError> {
        if fixed.is_some() && self.is_running()? {
            return Ok(self.port);
        }
        let data = self.data();
        let data = data.to_string_lossy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match fixed {
                Some(port) => port,
                None => free_port()?,
            };
            let log = self.dir.join(format!(
                "server-{}-{attempt}.log",
                LOG_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let options = format!("-p {port}");
            let (mut command, line) = self.run_as.command(
                &self.binaries.pg_ctl(),
                &[
                    "start",
                    "-w",
                    "-t",
                    START_TIMEOUT_SECS,
                    "-D",
                    &data,
                    "-l",
                    &log.to_string_lossy(),
                    "-o",
                    &options,
                ],
                &self.dir,
            );
            let output = command
                .output()
                .map_err(|error| LocalError::io(format!("running `{line}`"), error))?;
            if output.status.success() {
                return Ok(port);
            }
            let log_tail = tail(&log, LOG_TAIL_LINES);
            let port_clash =
                log_tail.contains("could not bind") || log_tail.contains("already in use");
            if !port_clash || attempt >= START_ATTEMPTS {
                return Err(LocalError::Start {
                    attempts: attempt,
                    output: combined_output(&output),
                    log_tail,
                });
            }
            if fixed.is_some() {
                // The same port again: give whoever holds it a moment.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// The watchdog process and the write end of its stdin. Dropping it closes
/// the pipe and waits until the watchdog has stopped what it watches and
/// removed its directory.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog stop the server and remove the
        // directory; wait for it so that both are gone when `drop` returns.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The watchdog's script: `$1` is the directory to remove, the remaining
/// arguments are the command that stops the server.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM QUIT PIPE
read -r _ignored
dir=$1
shift
"$@" >/dev/null 2>&1
rm -rf -- "$dir"
"#;

/// Creates a fresh temporary directory under `/tmp` (short enough for a Unix
/// socket path, and traversable by the `postgres` user when we are root) and
/// starts its watchdog, which runs the command `stop(dir)` and then removes
/// the directory once this process exits or drops the [`Watchdog`].
fn watched_temp_dir(
    prefix: &str,
    stop: impl FnOnce(&Path) -> Vec<String>,
) -> Result<(PathBuf, Watchdog), LocalError> {
    let base = Path::new("/tmp");
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        })
        .map_err(|error| LocalError::io("creating a temporary directory", error))?;
    let stop = stop(temp.path());
    let watchdog = spawn_watchdog(temp.path(), &stop)?;
    // From here on the watchdog owns the directory and removes it.
    Ok((temp.keep(), watchdog))
}

/// Starts the shell that runs `stop` and removes `dir` once this process
/// closes its stdin, by exiting or by dropping the [`Watchdog`].
fn spawn_watchdog(dir: &Path, stop: &[String]) -> Result<Watchdog, LocalError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("es-postgres-watchdog")
        .arg(dir)
        .args(stop)
        .current_dir("/")
        .stdin(Stdio::piped())
        // Must not keep the test harness's output pipes open.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not hit by signals sent to the test's process group (Ctrl-C).
        .process_group(0)
        .spawn()
        .map_err(|error| LocalError::io("starting the cleanup watchdog (`sh`)", error))?;
    let stdin = child.stdin.take();
    Ok(Watchdog { child, stdin })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, LocalError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| LocalError::io("looking for a free TCP port", error))
}

/// The last `lines` lines of a log file, or a note saying why there are none.
fn tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let mut out = String::new();
            for line in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "{line}");
            }
            out
        }
        Err(error) => format!("(could not read the log: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    async fn current_database(url: &str) -> Result<String, sqlx::Error> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
        assert_eq!(one, 1);
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(name)
    }

    #[tokio::test]
    async fn creates_distinct_databases_on_the_shared_server() -> TestResult {
        let postgres = shared().await?;
        let first = postgres.create_database().await?;
        let second = postgres.create_database().await?;
        assert_ne!(first, second);

        let first_name = current_database(&first).await?;
        let second_name = current_database(&second).await?;
        assert_ne!(first_name, second_name);
        assert!(first_name.starts_with("es_test_"), "{first_name}");
        assert!(first.ends_with(&format!("/{first_name}")), "{first}");
        Ok(())
    }

    /// Runs in another test's runtime too: the server must not depend on the
    /// runtime that started it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_is_one_server_per_process() -> TestResult {
        let (a, b) = tokio::join!(shared(), shared());
        let (a, b) = (a?, b?);
        assert!(std::ptr::eq(a, b));
        if !std::env::var(DATABASE_URL).is_ok_and(|url| !url.trim().is_empty()) {
            assert!(
                a.url().starts_with("postgres://postgres@127.0.0.1:"),
                "{}",
                a.url()
            );
            assert!(a.url().ends_with("/postgres"), "{}", a.url());
        }
        assert!(!current_database(a.url()).await?.is_empty());
        Ok(())
    }

    /// A cluster of its own, dropped at the end: the server stops and its
    /// directory goes away. Skipped when `DATABASE_URL` is set (a CI service
    /// may stand in for missing binaries).
    #[tokio::test]
    async fn dropping_a_cluster_removes_it() -> TestResult {
        if std::env::var(DATABASE_URL).is_ok_and(|url| !url.trim().is_empty()) {
            return Ok(());
        }
        let postgres =
            tokio::task::spawn_blocking(|| LocalPostgres::start_cluster(false, "")).await??;
        let url = postgres.url().to_owned();
        let dir = postgres
            .cluster
            .as_ref()
            .map(|cluster| cluster.dir.clone())
            .ok_or("no cluster")?;
        assert!(dir.join("data/postmaster.pid").is_file());
        current_database(&url).await?;

        tokio::task::spawn_blocking(move || drop(postgres)).await?;
        assert!(!dir.exists(), "{} still exists", dir.display());
        let connect = sqlx::PgConnection::connect(&url).await;
        assert!(connect.is_err(), "the server still accepts connections");
        Ok(())
    }

    /// A private cluster comes back on its port with its databases, and is
    /// removed when dropped even while stopped; the shared one cannot be
    /// stopped. Skipped when `DATABASE_URL` is set.
    #[tokio::test]
    async fn a_private_cluster_stops_and_starts_on_its_port() -> TestResult {
        if std::env::var(DATABASE_URL).is_ok_and(|url| !url.trim().is_empty()) {
            return Ok(());
        }
        let shared = shared().await?;
        assert!(matches!(shared.stop().await, Err(LocalError::NotPrivate)));
        let postgres = private().await?;
        assert_ne!(postgres.url(), shared.url());
        let url = postgres.create_database().await?;
        let name = current_database(&url).await?;
        postgres.stop().await?;
        postgres.stop().await?;
        assert!(sqlx::PgConnection::connect(&url).await.is_err());
        postgres.start().await?;
        postgres.start().await?;
        assert_eq!(current_database(&url).await?, name);
        postgres.stop().await?;
        let dir = postgres
            .cluster
            .as_ref()
            .map(|cluster| cluster.dir.clone())
            .ok_or("no cluster")?;
        tokio::task::spawn_blocking(move || drop(postgres)).await?;
        assert!(!dir.exists(), "{} still exists", dir.display());
        Ok(())
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        let message = LocalError::BinariesNotFound.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn replaces_the_database_of_a_url() {
        let cases = [
            ("postgres://u:p@h:5432/db", "postgres://u:p@h:5432/new"),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/new?sslmode=disable",
            ),
            ("postgres://h:1", "postgres://h:1/new"),
            ("postgres://h:1?x=y", "postgres://h:1/new?x=y"),
            (
                "postgres:///db?host=/run/pg",
                "postgres:///new?host=/run/pg",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "new"), expected, "{url}");
        }
    }

    #[test]
    fn reads_the_database_of_a_url() {
        let cases = [
            ("postgres://u:p@h:5432/db", Some("db")),
            ("postgres://u@h/db?sslmode=disable", Some("db")),
            ("postgres://h:1", None),
            ("postgres://h:1/?x=y", None),
            ("postgres:///db?host=/run/pg", Some("db")),
        ];
        for (url, expected) in cases {
            assert_eq!(database_of(url), expected, "{url}");
        }
    }

    #[test]
    fn sorts_versions_numerically() {
        assert_eq!(version_key("15"), Some(vec![15]));
        assert_eq!(version_key("9.6"), Some(vec![9, 6]));
        assert_eq!(version_key("main"), None);
        assert!(version_key("10") > version_key("9.6"));
    }

    #[test]
    fn database_names_are_unique_and_valid() {
        let a = unique_database_name();
        let b = unique_database_name();
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() < 64, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn runs_as_postgres_through_su_with_quoting() {
        let argv = RunAs::Su.argv(Path::new("/usr/bin/pg ctl"), &["-D", "it's"]);
        assert_eq!(
            argv,
            [
                "su",
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                r"exec '/usr/bin/pg ctl' '-D' 'it'\''s'"
            ]
        );
    }
}
