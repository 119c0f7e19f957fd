//! One module per command; `run` connects and dispatches.

mod close;
mod parked;
mod projections;
mod rebuild;
mod status;
mod streams;
mod tail;

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use es_postgres::{PgEventStore, PgStoreOptions};

use crate::args::{Cli, Command};
use crate::error::{CliError, redact};

/// How long connecting may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the command line.
///
/// # Errors
///
/// [`CliError`], whose exit code says whether the usage or the operation
/// failed.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Console(args) = &cli.command {
        crate::console::check(args)?;
    }
    let store = connect(&cli).await?;
    if !matches!(cli.command, Command::Migrate) {
        require_migrated(&store).await?;
    }
    let json = cli.json;
    match cli.command {
        Command::Migrate => status::migrate(&store, json).await,
        Command::Status => status::status(&store, json).await,
        Command::Streams(args) => streams::list(&store, &args, json).await,
        Command::Stream(args) => streams::show(&store, &args, json).await,
        Command::Tail(args) => tail::tail(&store, &args, json).await,
        Command::Projections => projections::list(&store, json).await,
        Command::Projection { name } => projections::show(&store, &name, json).await,
        Command::Rebuild(args) => rebuild::rebuild(&store, &args, json).await,
        Command::Parked(args) => parked::parked(&store, &args, json).await,
        Command::Archive(args) => close::close(&store, &args, close::Close::Archive, json).await,
        Command::Delete(args) => close::close(&store, &args, close::Close::Delete, json).await,
        Command::Console(args) => crate::console::serve(store, args).await,
    }
}

/// Connects to the database the command line names.
async fn connect(cli: &Cli) -> Result<PgEventStore, CliError> {
    let Some(url) = cli.url.as_deref() else {
        return Err(CliError::Usage(
            "no database given: pass --url or set DATABASE_URL".to_owned(),
        ));
    };
    let options = PgStoreOptions::new(cli.schema.as_str())
        .map_err(|e| CliError::Usage(format!("--schema: {e}")))?;
    let connecting = PgEventStore::connect(url, options);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(source)) => Err(CliError::Connect {
            url: redact(url),
            source: Box::new(source),
        }),
        Err(_) => Err(CliError::Connect {
            url: redact(url),
            source: Box::new(es_core::StoreError::Timeout {
                operation: "connect",
            }),
        }),
    }
}

/// Refuses to go on against a schema that holds no store; warns when it
/// holds an older one (what the tool reads may then be slow or missing).
async fn require_migrated(store: &PgEventStore) -> Result<(), CliError> {
    let pending = store
        .pending_migrations()
        .await
        .map_err(|e| CliError::store("reading the applied migrations", e))?;
    let schema = store.options().schema();
    let Some(first) = pending.first() else {
        return Ok(());
    };
    if pending.len() == es_postgres::migrate::MIGRATOR.iter().count() {
        return Err(CliError::NotFound(format!(
            "schema {schema:?} holds no event store: run `es migrate`"
        )));
    }
    eprintln!(
        "es: warning: schema {schema:?} lacks {} migrations (the first: {first}): run `es migrate`",
        pending.len()
    );
    Ok(())
}

/// Asks `question` on standard error and reads the answer from standard
/// input; no answer (end of input) is a no, which fails with `refused`
/// ("nothing discarded").
fn confirm(question: &str, refused: &str) -> Result<(), CliError> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Aborted(format!(
            "not confirmed, {refused} (pass --yes to skip the question)"
        )))
    }
}
