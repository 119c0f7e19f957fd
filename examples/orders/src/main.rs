//! `orders`: the demo (no arguments) or the HTTP API (`serve`).

use std::process::ExitCode;
use std::sync::Arc;

use es_postgres::{PgEventStore, PgServers, PgStoreOptions};
use es_postgres_local as local;
use orders::Error;
use orders::service::{Projections, Shop};
use orders::telemetry;

const USAGE: &str = "\
usage: orders               run the scripted demo against a throwaway database
       orders serve [--port N]
                            serve the HTTP API on 127.0.0.1 (port: --port, PORT, or 3000),
                            with GET /metrics; spans go over OTLP to
                            OTEL_EXPORTER_OTLP_ENDPOINT when it is set

PostgreSQL: the server named by DATABASE_URL, or else a throwaway cluster
started from the local server binaries and removed on exit. `serve` reads
through DATABASE_REPLICA_URL (a streaming replica) and appends through
DATABASE_POOLER_URL (PgBouncer in transaction mode) when they are set.";

enum Mode {
    Demo,
    Serve { port: u16 },
    Help,
}

fn parse_args() -> Result<Mode, String> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => Ok(Mode::Demo),
        Some("-h" | "--help" | "help") => Ok(Mode::Help),
        Some("serve") => {
            let mut port = std::env::var("PORT").ok();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--port" => port = Some(args.next().ok_or("--port needs a value")?),
                    other => return Err(format!("unknown argument {other:?}")),
                }
            }
            let port = match port {
                Some(text) => text.parse().map_err(|_| format!("invalid port {text:?}"))?,
                None => 3000,
            };
            Ok(Mode::Serve { port })
        }
        Some(other) => Err(format!("unknown command {other:?}")),
    }
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match mode {
            Mode::Help => {
                println!("{USAGE}");
                Ok(())
            }
            Mode::Demo => demo().await,
            Mode::Serve { port } => serve(port).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// The demo, in a fresh database: its order ids are fixed.
async fn demo() -> Result<(), Error> {
    let postgres = local::shared().await?;
    let url = postgres.create_database().await?;
    println!("PostgreSQL: {}", redact(&url));
    let store = PgEventStore::connect(&url, PgStoreOptions::default()).await?;
    let mut stdout = std::io::stdout();
    orders::demo::run(store, &mut stdout).await?;
    Ok(())
}

/// The primary at `url`, and the replica and the pooler that the
/// environment names.
fn servers_from_env(url: &str) -> PgServers {
    let named = |variable| std::env::var(variable).ok().filter(|url| !url.is_empty());
    let mut servers = PgServers::new(url);
    if let Some(replica) = named("DATABASE_REPLICA_URL") {
        println!("reading from the replica {}", redact(&replica));
        servers = servers.replica(replica);
    }
    if let Some(pooler) = named("DATABASE_POOLER_URL") {
        println!("appending through the pooler {}", redact(&pooler));
        servers = servers.pooler(pooler);
    }
    servers
}

async fn serve(port: u16) -> Result<(), Error> {
    let metrics = telemetry::install_prometheus()?;
    telemetry::spawn_upkeep(metrics.clone());
    let traces = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            println!("exporting traces over OTLP to {endpoint}");
            Some(telemetry::export_traces(&endpoint)?)
        }
        _ => None,
    };
    let postgres = local::shared().await?;
    let servers = servers_from_env(postgres.url());
    let store = PgEventStore::connect_servers(&servers, PgStoreOptions::default()).await?;
    let shop = Arc::new(Shop::open(store).await?);
    let projections = Projections::start(shop.store());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    println!("PostgreSQL: {}", redact(postgres.url()));
    println!("orders API on http://{address} (Ctrl-C stops it). Try:\n");
    print_examples(&address.to_string());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let app = orders::http::router(Arc::clone(&shop)).merge(telemetry::metrics_route(metrics));
    orders::http::serve(listener, app, shutdown).await?;
    println!("stopping the projection runners");
    let stopped = projections.stop().await;
    if let Some(traces) = traces {
        tokio::task::spawn_blocking(move || traces.shutdown())
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    }
    stopped
}

fn print_examples(address: &str) {
    let json = "-H 'content-type: application/json'";
    let id = "-H 'x-correlation-id: checkout-42'";
    let order = format!("{address}/orders/42");
    for line in [
        format!(
            r#"curl -s -X POST {address}/orders {json} {id} -d '{{"customer_id":"ada","order_id":"42"}}'"#
        ),
        format!(
            r#"curl -s -X POST {order}/items {json} {id} -d '{{"sku":"TEA-01","quantity":2,"unit_price_cents":450}}'"#
        ),
        format!(
            r#"curl -s -X POST {order}/items {json} {id} -d '{{"sku":"MUG-02","quantity":1,"unit_price_cents":1200}}'"#
        ),
        format!("curl -s -X DELETE {order}/items/MUG-02 {id}"),
        format!(
            r#"curl -s -X POST {order}/ship {json} -d '{{"tracking_number":"TRK-42"}}'   # 409: not paid yet"#
        ),
        format!(r#"curl -s -X POST {order}/pay {json} {id} -d '{{"amount_cents":900}}'"#),
        format!(r#"curl -s -X POST {order}/ship {json} {id} -d '{{"tracking_number":"TRK-42"}}'"#),
        format!("curl -s {order}               # the read model, a moment later"),
        format!("curl -s {order}/events        # the events and their metadata"),
        format!("curl -s {address}/orders"),
        format!("curl -s {address}/customers/ada"),
        format!("curl -s {address}/projections    # position and lag"),
        format!("curl -s -X POST {address}/projections/customer_totals/rebuild"),
    ] {
        println!("  {line}");
    }
    println!();
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
