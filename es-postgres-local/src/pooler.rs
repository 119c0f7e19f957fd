//! PgBouncer in transaction pooling mode in front of a server: see
//! [`pooler`] and [`shared_pooler`].

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{
    LOG_TAIL_LINES, LocalError, LocalPostgres, RunAs, START_ATTEMPTS, Watchdog, combined_output,
    find_on_path, free_port, hand_over, is_executable, run, run_blocking, running_as_root, shared,
    tail, watched_temp_dir,
};

/// Where the Debian package installs PgBouncer (`/usr/sbin` may be missing
/// from a non-root `PATH`).
const PGBOUNCER_PATH: &str = "/usr/sbin/pgbouncer";

/// `default_pool_size` of [`pooler`] and [`shared_pooler`]: server
/// connections per database.
const DEFAULT_POOL_SIZE: u32 = 20;

/// How long PgBouncer gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Files in the pooler's directory.
const CONFIG_FILE: &str = "pgbouncer.ini";
const PID_FILE: &str = "pgbouncer.pid";

/// The pooler in front of [`shared`], started at most once.
static SHARED_POOLER: OnceLock<Result<Pooler, LocalError>> = OnceLock::new();

/// The PgBouncer binary, found or installed at most once per process.
static PGBOUNCER: OnceLock<Result<PathBuf, LocalError>> = OnceLock::new();

/// The watchdog's stop command for a pooler (`$1` is the pid file). PgBouncer
/// writes its pid file once it listens, so a missing file means it never
/// started (or is about to: wait a moment). `SIGTERM` is an immediate
/// shutdown before PgBouncer 1.23 and waits for clients from then on, hence
/// the `SIGKILL` after two seconds; a pooler keeps nothing worth a clean
/// shutdown.
const STOP_SCRIPT: &str = r#"n=0
while [ ! -s "$1" ] && [ "$n" -lt 10 ]; do sleep 0.1; n=$((n + 1)); done
pid=$(cat "$1" 2>/dev/null) || exit 0
[ -n "$pid" ] || exit 0
kill -TERM "$pid" 2>/dev/null || exit 0
n=0
while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
kill -KILL "$pid" 2>/dev/null
exit 0
"#;

/// Starts PgBouncer in transaction pooling mode in front of `server`, for
/// tests of running behind a transaction pooler.
///
/// PgBouncer is looked up on `PATH`, then at `/usr/sbin/pgbouncer`. When it
/// is missing and this process runs as root, the Debian package is installed
/// (`apt-get install -y pgbouncer`, after an `apt-get update` if that fails);
/// the package's own service may start with it, on its own port, and is left
/// alone. The pooler has its own configuration in a fresh temporary
/// directory: it listens on a free TCP port of `127.0.0.1` (no Unix socket),
/// with `pool_mode = transaction`, `max_client_conn = 1000`,
/// `default_pool_size = 20` and `ignore_startup_parameters =
/// extra_float_digits,options` (sqlx sends the first, es-postgres the
/// second); all databases together get at most 50 server connections
/// (`max_user_connections`), and idle ones close after 15 seconds, so that
/// many test databases do not exhaust the server's `max_connections`.
/// Clients are not authenticated; PgBouncer logs in to `server` as
/// the user (and with the password) of [`LocalPostgres::url`], whatever user
/// a client names, so it works in front of a server named by `DATABASE_URL`
/// too.
///
/// PgBouncer refuses to run as root: it is then run as the `postgres` user,
/// like the server. It runs as a daemon with a watchdog like the clusters':
/// it is stopped and its directory removed when the returned value is
/// dropped or the process ends, however it ends. Dropping blocks until then
/// (up to about two seconds); in async code, drop it with
/// `tokio::task::spawn_blocking`.
///
/// Transaction pooling hands a server session to another client after each
/// transaction: session state (`SET`, advisory locks, `LISTEN`, temporary
/// tables) does not carry over. The ignored startup parameters do not reach
/// the server either: `options=-c jit=off` has no effect through the pooler
/// (`ALTER DATABASE … SET` or `SET LOCAL` do). PgBouncer before 1.21 (Debian
/// 12 has 1.18) does not support protocol-level named prepared statements,
/// which sqlx uses for every `sqlx::query` by default: a second client on the
/// same server session fails with "prepared statement `sqlx_s_1` already
/// exists". The simple query protocol (`Executor::execute(&str)`,
/// `sqlx::raw_sql`) works. Unnamed statements (`.persistent(false)`) work
/// within a transaction; outside one, sqlx parses and executes them in two
/// round trips, between which PgBouncer may hand the server session to
/// another client.
///
/// # Errors
///
/// [`LocalError::PgbouncerNotFound`] when PgBouncer is missing and cannot be
/// installed; [`LocalError::Command`] when installing it fails;
/// [`LocalError::PoolerStart`] (with the tail of PgBouncer's log) when it
/// does not start or does not accept connections within 30 seconds.
pub async fn pooler(server: &LocalPostgres) -> Result<Pooler, LocalError> {
    let url = server.url().to_owned();
    run_blocking("starting PgBouncer", move || {
        Pooler::start(&url, DEFAULT_POOL_SIZE)
    })
    .await
}

/// Returns the process-wide [`pooler`] in front of [`shared`], starting both
/// on first use.
///
/// The outcome of the first call, success or failure, is kept for the rest
/// of the process (a failure of [`shared`] itself is not: that one keeps its
/// own). The pooler is stopped when the process ends.
///
/// # Errors
///
/// As [`shared`], and as [`pooler`].
pub async fn shared_pooler() -> Result<&'static Pooler, LocalError> {
    let outcome = if let Some(outcome) = SHARED_POOLER.get() {
        outcome
    } else {
        let server = shared().await?;
        run_blocking("starting the shared PgBouncer", move || {
            Ok(SHARED_POOLER.get_or_init(|| Pooler::start(server.url(), DEFAULT_POOL_SIZE)))
        })
        .await?
    };
    outcome.as_ref().map_err(Clone::clone)
}

/// PgBouncer in transaction pooling mode in front of a server, from
/// [`pooler`] or [`shared_pooler`].
#[derive(Debug)]
pub struct Pooler {
    /// The port on 127.0.0.1.
    port: u16,
    /// The temporary directory: configuration, log and pid file.
    dir: PathBuf,
    /// Dropping this stops PgBouncer and removes the directory.
    _watchdog: Watchdog,
}

impl Pooler {
    /// Maps the URL of a database on the server behind the pooler to the
    /// same database through the pooler: the same user, password, database
    /// and query parameters, with the pooler's host and port (and without
    /// parameters that name the server or its TLS set-up: `host`,
    /// `hostaddr`, `port`, `ssl…`). For example
    /// `postgres://postgres@127.0.0.1:41234/es_test_1` becomes
    /// `postgres://postgres@127.0.0.1:41999/es_test_1`.
    #[must_use]
    pub fn url(&self, database_url: &str) -> String {
        through(database_url, self.port)
    }

    /// Finds or installs PgBouncer and starts it in front of the server of
    /// `server_url`, with `pool_size` server connections per database.
    fn start(server_url: &str, pool_size: u32) -> Result<Self, LocalError> {
        let binary = PGBOUNCER.get_or_init(find_or_install).clone()?;
        let upstream = Upstream::from_url(server_url)?;
        let run_as = RunAs::detect();
        let (dir, watchdog) = watched_temp_dir("es-pgbouncer-", |dir| {
            let script = STOP_SCRIPT.to_owned();
            let pid_file = dir.join(PID_FILE).to_string_lossy().into_owned();
            vec![
                "sh".to_owned(),
                "-c".to_owned(),
                script,
                "es-pgbouncer-stop".to_owned(),
                pid_file,
            ]
        })?;
        let mut pooler = Self {
            port: 0,
            dir,
            _watchdog: watchdog,
        };
        // On any error below, dropping `pooler` stops and removes it.
        hand_over(run_as, &pooler.dir)?;
        pooler.port = pooler.launch(&binary, run_as, &upstream, pool_size)?;
        Ok(pooler)
    }

    /// Starts PgBouncer on a free port, retrying when another process takes
    /// the port first; returns the port.
    fn launch(
        &self,
        binary: &Path,
        run_as: RunAs,
        upstream: &Upstream,
        pool_size: u32,
    ) -> Result<u16, LocalError> {
        let config = self.dir.join(CONFIG_FILE);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let log = self.dir.join(format!("pgbouncer-{attempt}.log"));
            let text = upstream.config(port, pool_size, &log, &self.dir.join(PID_FILE));
            fs::write(&config, text)
                .map_err(|error| LocalError::io(format!("writing {}", config.display()), error))?;
            // Daemonized (`-d`): the command returns once PgBouncer has
            // forked, or fails when it cannot load its configuration.
            let (mut command, line) =
                run_as.command(binary, &["-d", &config.to_string_lossy()], &self.dir);
            let output = command
                .output()
                .map_err(|error| LocalError::io(format!("running `{line}`"), error))?;
            let outcome = if output.status.success() {
                wait_until_ready(&self.dir.join(PID_FILE), port, &log)
            } else {
                Launch::Failed(format!(
                    "`{line}` failed ({}): {}",
                    output.status,
                    combined_output(&output)
                ))
            };
            let reason = match outcome {
                Launch::Ready => return Ok(port),
                Launch::PortTaken if attempt < START_ATTEMPTS => continue,
                Launch::PortTaken => format!("another process took port {port}"),
                Launch::Failed(reason) => reason,
            };
            return Err(LocalError::PoolerStart {
                attempts: attempt,
                reason,
                log_tail: tail(&log, LOG_TAIL_LINES),
            });
        }
    }
}

/// How a start of PgBouncer went.
enum Launch {
    Ready,
    /// The port was taken meanwhile: try another.
    PortTaken,
    Failed(String),
}

/// Waits until PgBouncer has written its pid file (it does once it listens)
/// and accepts TCP connections, or has failed (a `FATAL` line in its log).
fn wait_until_ready(pid_file: &Path, port: u16, log: &Path) -> Launch {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let started = Instant::now();
    loop {
        if pid_file.is_file()
            && TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
        {
            return Launch::Ready;
        }
        let log_tail = tail(log, LOG_TAIL_LINES);
        if log_tail.contains("FATAL") {
            // "cannot listen on …: Address already in use", then "FATAL …
            // nowhere to listen on".
            if log_tail.contains("Address already in use") {
                return Launch::PortTaken;
            }
            return Launch::Failed("PgBouncer exited with a fatal error".to_owned());
        }
        if started.elapsed() >= READY_TIMEOUT {
            return Launch::Failed(format!(
                "it did not accept connections on {address} within {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The PgBouncer binary: found, or installed when this process is root.
fn find_or_install() -> Result<PathBuf, LocalError> {
    let find = || {
        find_on_path("pgbouncer").or_else(|| {
            let path = Path::new(PGBOUNCER_PATH);
            is_executable(path).then(|| path.to_owned())
        })
    };
    if let Some(binary) = find() {
        return Ok(binary);
    }
    let why = if !running_as_root() {
        "this process is not root, so it cannot install it"
    } else if find_on_path("apt-get").is_none() {
        "apt-get is not available to install it"
    } else {
        install()?;
        "`apt-get install -y pgbouncer` succeeded but installed no pgbouncer binary there"
    };
    find().ok_or_else(|| LocalError::PgbouncerNotFound {
        why: why.to_owned(),
    })
}

/// Installs the Debian package `pgbouncer`, updating the package lists and
/// trying again if the first attempt fails (they may be missing or stale).
fn install() -> Result<(), LocalError> {
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Wait for another apt or dpkg (such as another test process
            // installing the same package) instead of failing at once.
            .args(["-q", "-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null());
        let line = format!("apt-get {}", args.join(" "));
        (command, line)
    };
    let hint = "PgBouncer is missing and this process, running as root, tried to install it; \
                install the `pgbouncer` package by hand";
    let (command, line) = apt_get(&["install", "-y", "pgbouncer"]);
    if run(command, &line, hint).is_ok() {
        return Ok(());
    }
    let (command, line) = apt_get(&["update"]);
    run(command, &line, hint)?;
    let (command, line) = apt_get(&["install", "-y", "pgbouncer"]);
    run(command, &line, hint).map(drop)
}

/// Where and as whom PgBouncer logs in to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Upstream {
    /// A host name or address, or the directory of a Unix socket.
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    /// PgBouncer's `server_tls_sslmode`.
    ssl_mode: &'static str,
}

impl Upstream {
    /// Reads the server URL as sqlx does (`PGHOST`, `PGPORT`, `PGUSER` and
    /// `PGPASSWORD` fill in what it lacks).
    fn from_url(url: &str) -> Result<Self, LocalError> {
        // The URL may hold a password: not in the message.
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| LocalError::sql("reading the server's URL", error))?;
        let host = options.get_socket().map_or_else(
            || options.get_host().to_owned(),
            |socket| socket.to_string_lossy().into_owned(),
        );
        let password = url_password(url).or_else(|| std::env::var("PGPASSWORD").ok());
        let upstream = Self {
            host,
            port: options.get_port(),
            user: options.get_username().to_owned(),
            password,
            ssl_mode: match options.get_ssl_mode() {
                PgSslMode::Disable => "disable",
                PgSslMode::Allow => "allow",
                PgSslMode::Prefer => "prefer",
                PgSslMode::Require => "require",
                PgSslMode::VerifyCa => "verify-ca",
                PgSslMode::VerifyFull => "verify-full",
            },
        };
        let values = [&upstream.host, &upstream.user];
        if values
            .into_iter()
            .chain(&upstream.password)
            .any(|v| v.contains(['\n', '\r']))
        {
            return Err(LocalError::io(
                "writing the PgBouncer configuration",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the server's host, user or password contains a line break",
                ),
            ));
        }
        Ok(upstream)
    }

    /// The configuration of a pooler on `port`.
    ///
    /// Authentication: `auth_type = any` accepts every client without a
    /// password and requires a user forced in the database line, which
    /// PgBouncer then logs in to the server as (with the password, in plain
    /// text, so that md5 and SCRAM servers work too). This needs no
    /// `auth_file` that would have to list (and hash) the users of a server
    /// named by `DATABASE_URL`; `trust` would need that file. The `*`
    /// database forwards every database name as it is.
    ///
    /// No Unix socket: binding the TCP port is then the only way to listen,
    /// so a port taken meanwhile is fatal (and retried) rather than a
    /// warning. Forcing one user puts every database's pool under it:
    /// `max_user_connections` caps the server connections of all of them
    /// (PgBouncer closes the longest-idle one to open another), and idle
    /// ones close after `server_idle_timeout`, so that the many test
    /// databases do not add up to the server's `max_connections`.
    fn config(&self, port: u16, pool_size: u32, log: &Path, pid_file: &Path) -> String {
        let mut database = format!(
            "* = host={} port={} user={}",
            quote(&self.host),
            self.port,
            quote(&self.user)
        );
        if let Some(password) = &self.password {
            database.push_str(" password=");
            database.push_str(&quote(password));
        }
        format!(
            "[databases]\n\
             {database}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             max_client_conn = 1000\n\
             default_pool_size = {pool_size}\n\
             max_user_connections = 50\n\
             server_idle_timeout = 15\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             server_tls_sslmode = {ssl_mode}\n\
             logfile = {log}\n\
             pidfile = {pid_file}\n",
            ssl_mode = self.ssl_mode,
            log = log.display(),
            pid_file = pid_file.display(),
        )
    }
}

/// Quotes a value of a PgBouncer connection string.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The percent-decoded password of a `postgres://user:password@…` URL.
fn url_password(url: &str) -> Option<String> {
    let authority = authority_of(url);
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    Some(percent_decode(password))
}

/// The `user:password@host:port` part of a URL.
fn authority_of(url: &str) -> &str {
    let rest = url.find("://").map_or(url, |at| &url[at + 3..]);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    &rest[..end]
}

/// Decodes `%XX` escapes; anything else is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with 127.0.0.1:`port` as its host and port, keeping the user,
/// password, database and the query parameters that do not name the server.
fn through(url: &str, port: u16) -> String {
    let (base, query) = url
        .find('?')
        .map_or((url, ""), |at| (&url[..at], &url[at + 1..]));
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !key.is_empty()
                && !matches!(key, "host" | "hostaddr" | "port")
                && !key.starts_with("ssl")
        })
        .collect();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    format!("{scheme}://{userinfo}127.0.0.1:{port}{path}{query}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use sqlx::{Connection as _, Executor as _, Row as _};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// `BEGIN; SELECT pg_backend_pid(); COMMIT` in the simple query protocol
    /// (sqlx's prepared statements need PgBouncer 1.21 or later in
    /// transaction mode); returns the server process id.
    async fn backend_pid_in_transaction(
        connection: &mut sqlx::PgConnection,
    ) -> Result<i32, sqlx::Error> {
        connection.execute("BEGIN").await?;
        let row = connection.fetch_one("SELECT pg_backend_pid()").await?;
        connection.execute("COMMIT").await?;
        row.try_get(0)
    }

    #[tokio::test]
    async fn the_shared_pooler_serves_a_fresh_database() -> TestResult {
        let server = shared().await?;
        let url = server.create_database().await?;
        let pooler = shared_pooler().await?;
        assert!(std::ptr::eq(pooler, shared_pooler().await?));
        let through_pooler = pooler.url(&url);
        assert_ne!(through_pooler, url);

        let mut connection = sqlx::PgConnection::connect(&through_pooler).await?;
        let row = connection.fetch_one("SELECT 1, current_database()").await?;
        assert_eq!(row.try_get::<i32, _>(0)?, 1);
        let database: String = row.try_get(1)?;
        assert!(
            url.ends_with(&format!("/{database}")),
            "{database} vs {url}"
        );
        backend_pid_in_transaction(&mut connection).await?;
        connection.close().await?;
        Ok(())
    }

    /// With one server connection per database, two clients take turns on
    /// the same server session: transaction pooling.
    #[tokio::test]
    async fn two_clients_share_one_server_session() -> TestResult {
        let server = shared().await?;
        let url = server.create_database().await?;
        let admin_url = server.url().to_owned();
        let pooler =
            run_blocking("starting PgBouncer", move || Pooler::start(&admin_url, 1)).await?;
        let url = pooler.url(&url);
        let mut first = sqlx::PgConnection::connect(&url).await?;
        let mut second = sqlx::PgConnection::connect(&url).await?;
        let mut pids = HashSet::new();
        for turn in 0..50 {
            let connection = if turn % 2 == 0 {
                &mut first
            } else {
                &mut second
            };
            pids.insert(backend_pid_in_transaction(connection).await?);
        }
        assert_eq!(pids.len(), 1, "{pids:?}");
        first.close().await?;
        second.close().await?;

        let dir = pooler.dir.clone();
        assert!(dir.join(PID_FILE).is_file());
        tokio::task::spawn_blocking(move || drop(pooler)).await?;
        assert!(!dir.exists(), "{} still exists", dir.display());
        let connect = sqlx::PgConnection::connect(&url).await;
        assert!(connect.is_err(), "the pooler still accepts connections");
        Ok(())
    }

    #[test]
    fn maps_urls_to_the_pooler() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:41234/es_test_1",
                "postgres://postgres@127.0.0.1:6000/es_test_1",
            ),
            (
                "postgresql://u:p%40ss@db.example:5432/app?sslmode=require&application_name=t",
                "postgresql://u:p%40ss@127.0.0.1:6000/app?application_name=t",
            ),
            ("postgres://h:1", "postgres://127.0.0.1:6000"),
            (
                "postgres:///db?host=/run/pg&port=5433",
                "postgres://127.0.0.1:6000/db",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(through(url, 6000), expected, "{url}");
        }
    }

    #[test]
    fn configures_the_server_login() -> Result<(), LocalError> {
        let upstream = Upstream::from_url(
            "postgres://app:it%27s%20secret@db.example:5433/app?sslmode=require",
        )?;
        assert_eq!(upstream.host, "db.example");
        assert_eq!(upstream.port, 5433);
        assert_eq!(upstream.user, "app");
        assert_eq!(upstream.password.as_deref(), Some("it's secret"));
        let config = upstream.config(6000, 20, Path::new("/t/log"), Path::new("/t/pid"));
        assert!(
            config.contains("* = host='db.example' port=5433 user='app' password='it''s secret'\n"),
            "{config}"
        );
        for line in [
            "listen_port = 6000\n",
            "pool_mode = transaction\n",
            "server_tls_sslmode = require\n",
            "ignore_startup_parameters = extra_float_digits,options\n",
        ] {
            assert!(config.contains(line), "{config}");
        }
        let local = Upstream::from_url("postgres://postgres@127.0.0.1:41234/postgres")?;
        assert_eq!(local.password, std::env::var("PGPASSWORD").ok());
        Ok(())
    }

    #[test]
    fn missing_pgbouncer_says_what_to_install() {
        let message = LocalError::PgbouncerNotFound {
            why: "this process is not root, so it cannot install it".to_owned(),
        }
        .to_string();
        assert!(message.contains("apt-get install pgbouncer"), "{message}");
        assert!(message.contains("not root"), "{message}");
    }
}
