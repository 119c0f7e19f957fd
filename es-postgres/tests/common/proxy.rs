//! A TCP proxy in front of the test server that counts the messages the
//! client sends, to prove how many statements and round trips an operation
//! costs whatever server it runs against.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts of frontend messages seen by the proxy.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// `Execute` messages: one per statement run with the extended protocol.
    pub(crate) executes: AtomicU64,
    /// `Sync` messages: one per round trip of the extended protocol.
    pub(crate) syncs: AtomicU64,
    /// `Query` messages: one per simple-protocol round trip.
    pub(crate) queries: AtomicU64,
    /// `DataRow` messages from the server: rows returned to the client.
    pub(crate) rows: AtomicU64,
}

impl Counts {
    pub(crate) fn reset(&self) {
        for c in [&self.executes, &self.syncs, &self.queries, &self.rows] {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// Rows returned by the server.
    pub(crate) fn rows(&self) -> u64 {
        self.rows.load(Ordering::SeqCst)
    }

    /// (executes, syncs, queries)
    pub(crate) fn get(&self) -> (u64, u64, u64) {
        (
            self.executes.load(Ordering::SeqCst),
            self.syncs.load(Ordering::SeqCst),
            self.queries.load(Ordering::SeqCst),
        )
    }
}

/// Starts a counting proxy to the server of `url`; returns connect options
/// that go through it, and the counts.
pub(crate) async fn start(url: &str) -> (PgConnectOptions, Arc<Counts>) {
    let direct: PgConnectOptions = url.parse().expect("a valid database URL");
    let upstream = format!("{}:{}", direct.get_host(), direct.get_port());
    assert!(
        !direct.get_host().starts_with('/'),
        "the counting proxy needs a TCP server address, not the socket {upstream}"
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let counts = Arc::new(Counts::default());
    let shared = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counts = Arc::clone(&shared);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (client_read, mut client_write) = client.into_split();
                let (mut server_read, server_write) = server.into_split();
                let up = tokio::spawn(forward_frontend(
                    client_read,
                    server_write,
                    Arc::clone(&counts),
                ));
                let _ = forward_backend(&mut server_read, &mut client_write, &counts).await;
                up.abort();
            });
        }
    });
    let options = direct
        .host("127.0.0.1")
        .port(port)
        .ssl_mode(PgSslMode::Disable);
    (options, counts)
}

/// Copies server-to-client traffic message by message, counting rows. With
/// SSL disabled, every backend message is typed from the first byte on.
async fn forward_backend(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    counts: &Counts,
) -> std::io::Result<()> {
    loop {
        let kind = from.read_u8().await?;
        let len = from.read_i32().await?;
        let mut message = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1);
        message.push(kind);
        message.extend_from_slice(&len.to_be_bytes());
        message.resize(usize::try_from(len).unwrap_or(4) + 1, 0);
        from.read_exact(&mut message[5..]).await?;
        if kind == b'D' {
            counts.rows.fetch_add(1, Ordering::SeqCst);
        }
        to.write_all(&message).await?;
    }
}

/// Copies client-to-server traffic message by message, counting types.
async fn forward_frontend(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<Counts>,
) -> std::io::Result<()> {
    // Untyped messages first: SSL/GSS requests, then the startup message.
    loop {
        let len = from.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        from.read_exact(&mut body).await?;
        let mut message = len.to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        to.write_all(&message).await?;
        let code = body
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        // 80877103: SSLRequest, 80877104: GSSENCRequest; anything else is
        // the startup message, after which every message is typed.
        if !matches!(code, Some(80_877_103 | 80_877_104)) {
            break;
        }
    }
    loop {
        let kind = from.read_u8().await?;
        let len = from.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        from.read_exact(&mut body).await?;
        match kind {
            b'E' => counts.executes.fetch_add(1, Ordering::SeqCst),
            b'S' => counts.syncs.fetch_add(1, Ordering::SeqCst),
            b'Q' => counts.queries.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        let mut message = vec![kind];
        message.extend_from_slice(&len.to_be_bytes());
        message.extend_from_slice(&body);
        to.write_all(&message).await?;
    }
}
