//! A throwaway primary with a hot standby streaming from it: see
//! [`replicated`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

use super::{
    Binaries, Cluster, LOG_TAIL_LINES, LocalError, LocalPostgres, SUPERUSER, admin_url,
    append_settings, database_of, find_binaries, find_on_path, hand_over, is_executable, run,
    run_blocking, tail, with_database,
};

/// What the primary sets on top of the usual throwaway settings (appended,
/// so it wins). With `synchronous_commit = off` a commit's WAL is only
/// flushed, and so only streamed to the standby, every `wal_writer_delay`;
/// with it on, each commit flushes its WAL (cheaply: `fsync` stays off) and
/// the WAL sender streams it at once.
const PRIMARY_SETTINGS: &str = "synchronous_commit = on\n";

/// How long [`Replicated::wait_for_replay`] waits for the standby.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`Replicated::wait_for_replay`] asks the standby.
const REPLAY_POLL: Duration = Duration::from_millis(10);

/// Starts a throwaway primary cluster and a hot standby that streams its WAL,
/// for tests of reading from a replica.
///
/// `DATABASE_URL` is ignored: the pair is always made of two fresh throwaway
/// clusters, as [`private`](crate::private) makes. The primary is set up
/// like the other throwaway clusters except that `synchronous_commit` is on
/// (`fsync` stays off), so that each commit's WAL reaches the standby at
/// once; [`Replicated::primary`] may be stopped and started like any
/// [`private`](crate::private) cluster. The standby is a `pg_basebackup -R -X stream` copy of the
/// primary with its own port, Unix socket directory and watchdog; it
/// answers read-only queries (`pg_is_in_recovery()` is true).
///
/// Everything created on the primary, including databases made with
/// [`LocalPostgres::create_database`] after the standby started, appears on
/// the standby once it has replayed that far: call
/// [`Replicated::wait_for_replay`] before reading what was just written.
///
/// Both clusters are removed when the returned value is dropped or the
/// process ends. Dropping blocks until both servers have stopped; in async
/// code, drop it with `tokio::task::spawn_blocking`.
///
/// # Errors
///
/// [`LocalError::BinariesNotFound`] when the server binaries are missing;
/// [`LocalError::Command`] (with the output of `pg_basebackup`, `initdb` or
/// `chown`) or [`LocalError::Start`] (with the tail of the server log) when
/// either cluster cannot be made or started.
pub async fn replicated() -> Result<Replicated, LocalError> {
    run_blocking("starting a replicated pair of clusters", Replicated::start).await
}

/// A throwaway primary cluster and a hot standby streaming from it, from
/// [`replicated`].
#[derive(Debug)]
pub struct Replicated {
    // Fields drop in order: the standby stops before its primary.
    /// The standby's cluster; dropping it stops the server and removes it.
    standby: Cluster,
    /// The URL of the standby's `postgres` database.
    standby_admin_url: String,
    primary: LocalPostgres,
}

impl Replicated {
    /// The primary: a [`private`](crate::private)-like cluster that accepts
    /// writes and [`LocalPostgres::create_database`].
    #[must_use]
    pub fn primary(&self) -> &LocalPostgres {
        &self.primary
    }

    /// The URL of the same database on the standby: `database_url_on_primary`
    /// (such as a URL from [`LocalPostgres::create_database`] on
    /// [`primary`](Self::primary)) with its database kept and the standby's
    /// host and port, such as `postgres://postgres@127.0.0.1:41235/es_test_…`.
    /// A URL naming no database maps to the standby's `postgres` database.
    ///
    /// The database is there once the standby has replayed its creation (see
    /// [`wait_for_replay`](Self::wait_for_replay)).
    #[must_use]
    pub fn standby_url(&self, database_url_on_primary: &str) -> String {
        match database_of(database_url_on_primary) {
            Some(database) => with_database(&self.standby_admin_url, database),
            None => self.standby_admin_url.clone(),
        }
    }

    /// Waits until the standby has replayed the primary's WAL up to where it
    /// was when this was called (`pg_current_wal_lsn()`), so that everything
    /// committed on the primary before the call can be read on the standby.
    /// Gives up after 30 seconds.
    ///
    /// # Errors
    ///
    /// [`LocalError::Replay`] (with the tail of the standby's log) when the
    /// standby does not catch up in time; [`LocalError::Sql`] when either
    /// server cannot be queried.
    pub async fn wait_for_replay(&self) -> Result<(), LocalError> {
        let target = current_wal_lsn(self.primary.url()).await?;
        let url = &self.standby_admin_url;
        let mut standby = sqlx::PgConnection::connect(url)
            .await
            .map_err(|error| LocalError::sql(format!("connecting to the standby {url}"), error))?;
        let started = Instant::now();
        loop {
            let (reached, replayed): (bool, Option<String>) = sqlx::query_as(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false), \
                        pg_last_wal_replay_lsn()::text",
            )
            .bind(&target)
            .fetch_one(&mut standby)
            .await
            .map_err(|error| LocalError::sql("asking the standby how far it replayed", error))?;
            if reached {
                // Caught up; a failure to say goodbye does not matter.
                let _ = standby.close().await;
                return Ok(());
            }
            if started.elapsed() >= REPLAY_TIMEOUT {
                return Err(LocalError::Replay {
                    target,
                    replayed: replayed.unwrap_or_else(|| "nothing".to_owned()),
                    waited_secs: REPLAY_TIMEOUT.as_secs(),
                    log_tail: newest_log(&self.standby.dir).map_or_else(
                        || "(no server log found)".to_owned(),
                        |log| tail(&log, LOG_TAIL_LINES),
                    ),
                });
            }
            tokio::time::sleep(REPLAY_POLL).await;
        }
    }

    /// Starts the primary, then the standby.
    fn start() -> Result<Self, LocalError> {
        let binaries = find_binaries().ok_or(LocalError::BinariesNotFound)?;
        let primary = Cluster::start(&binaries, true, PRIMARY_SETTINGS)?;
        let primary_port = primary.port;
        let primary = LocalPostgres {
            admin_url: admin_url(primary_port),
            cluster: Some(primary),
        };
        // On an error, dropping `primary` stops and removes it.
        let standby = start_standby(&binaries, primary_port)?;
        Ok(Self {
            standby_admin_url: admin_url(standby.port),
            standby,
            primary,
        })
    }
}

/// Makes a standby of the primary on `primary_port` with `pg_basebackup`
/// and starts it on a free port.
fn start_standby(binaries: &Binaries, primary_port: u16) -> Result<Cluster, LocalError> {
    let pg_basebackup = find_pg_basebackup(binaries).ok_or_else(|| {
        LocalError::io(
            format!(
                "looking for pg_basebackup next to pg_ctl in {} (or where that links to) and on \
                 PATH: install the PostgreSQL client programs of the server's version \
                 (Debian: apt-get install postgresql-client)",
                binaries.dir.display()
            ),
            io::Error::from(io::ErrorKind::NotFound),
        )
    })?;
    let mut standby = Cluster::create(binaries, false)?;
    // On any error below, dropping `standby` removes it.
    hand_over(standby.run_as, &standby.dir)?;
    let data = standby.data();
    let port = primary_port.to_string();
    let (command, line) = standby.run_as.command(
        &pg_basebackup,
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            SUPERUSER,
            "-D",
            &data.to_string_lossy(),
            // Writes standby.signal and primary_conninfo.
            "-R",
            "-X",
            "stream",
            // An immediate checkpoint: a spread one can take minutes.
            "-c",
            "fast",
            "--no-sync",
        ],
        &standby.dir,
    );
    run(command, &line, "")?;
    // The copied postgresql.conf names the primary's socket directory.
    let settings = format!(
        "\n# es-postgres standby\nunix_socket_directories = '{}'\n",
        standby.dir.to_string_lossy().replace('\'', "''"),
    );
    append_settings(&data, &settings)?;
    standby.port = standby.control().start_on(None)?;
    Ok(standby)
}

/// `pg_basebackup` of the server's version: next to `pg_ctl`, or next to
/// what `pg_ctl` links to (`/usr/local/bin/pg_ctl` may link to a versioned
/// `bin` directory), or else on `PATH`.
fn find_pg_basebackup(binaries: &Binaries) -> Option<PathBuf> {
    let linked = fs::canonicalize(binaries.pg_ctl())
        .ok()
        .and_then(|pg_ctl| pg_ctl.parent().map(|dir| dir.join("pg_basebackup")));
    std::iter::once(binaries.dir.join("pg_basebackup"))
        .chain(linked)
        .find(|candidate| is_executable(candidate))
        .or_else(|| find_on_path("pg_basebackup"))
}

/// The primary's current WAL write position, as text (`0/3000148`).
async fn current_wal_lsn(url: &str) -> Result<String, LocalError> {
    let mut primary = sqlx::PgConnection::connect(url)
        .await
        .map_err(|error| LocalError::sql(format!("connecting to the primary {url}"), error))?;
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut primary)
        .await
        .map_err(|error| LocalError::sql("asking the primary for its WAL position", error))?;
    let _ = primary.close().await;
    Ok(lsn)
}

/// The most recently written server log (`server-*.log`) in `dir`.
fn newest_log(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("server-") && name.ends_with(".log")
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max()
        .map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use sqlx::Executor as _;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Whether the pair cannot be made here because the server binaries are
    /// missing while `DATABASE_URL` stands in for them (as on a CI service).
    fn cannot_start_clusters() -> bool {
        find_binaries().is_none()
            && std::env::var(super::super::DATABASE_URL).is_ok_and(|url| !url.trim().is_empty())
    }

    #[tokio::test]
    async fn the_standby_reads_what_the_primary_wrote() -> TestResult {
        if cannot_start_clusters() {
            return Ok(());
        }
        let pair = replicated().await?;
        let url = pair.primary().create_database().await?;
        pair.wait_for_replay().await?;

        let standby_url = pair.standby_url(&url);
        assert_ne!(standby_url, url);
        assert_eq!(database_of(&standby_url), database_of(&url));
        let mut standby = sqlx::PgConnection::connect(&standby_url).await?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut standby)
            .await?;
        assert!(in_recovery, "the standby is not in recovery");

        let mut primary = sqlx::PgConnection::connect(&url).await?;
        let on_primary: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut primary)
            .await?;
        assert!(!on_primary, "the primary is in recovery");
        primary
            .execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
            .await?;
        primary
            .execute("INSERT INTO notes VALUES (1, 'written on the primary')")
            .await?;
        pair.wait_for_replay().await?;

        let body: String = sqlx::query_scalar("SELECT body FROM notes WHERE id = 1")
            .fetch_one(&mut standby)
            .await?;
        assert_eq!(body, "written on the primary");
        let write = standby.execute("INSERT INTO notes VALUES (2, 'no')").await;
        assert!(write.is_err(), "the standby accepted a write");

        primary.close().await?;
        standby.close().await?;
        let dirs = [
            pair.standby.dir.clone(),
            pair.primary
                .cluster
                .as_ref()
                .map(|cluster| cluster.dir.clone())
                .ok_or("no primary cluster")?,
        ];
        tokio::task::spawn_blocking(move || drop(pair)).await?;
        for dir in dirs {
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
        Ok(())
    }

    #[test]
    fn a_replay_timeout_shows_the_positions_and_the_log() {
        let message = LocalError::Replay {
            target: "0/3000148".to_owned(),
            replayed: "0/3000000".to_owned(),
            waited_secs: 30,
            log_tail: "FATAL:  could not connect to the primary server".to_owned(),
        }
        .to_string();
        for part in ["0/3000148", "0/3000000", "30 s", "could not connect"] {
            assert!(message.contains(part), "{message}");
        }
    }
}
