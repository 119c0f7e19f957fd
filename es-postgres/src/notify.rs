//! Waking subscriptions: in-process after each local append, and across
//! processes through one LISTEN connection per store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{oneshot, watch};

use crate::data::listeners;

/// The wake-up signal of one store: its value changes whenever the feed may
/// have grown.
#[derive(Debug)]
pub(crate) struct Wakeups {
    signal: Arc<watch::Sender<u64>>,
    /// Dropped with the store, which stops the listener task.
    listener: Mutex<Option<oneshot::Sender<()>>>,
    /// When this store last looked for rows of ended listeners.
    last_sweep: Mutex<Option<tokio::time::Instant>>,
}

impl Wakeups {
    pub(crate) fn new() -> Self {
        Self {
            signal: Arc::new(watch::channel(0).0),
            listener: Mutex::new(None),
            last_sweep: Mutex::new(None),
        }
    }

    /// Wakes this process's subscribers.
    pub(crate) fn wake(&self) {
        bump(&self.signal);
    }

    /// A receiver of wake-ups, starting the LISTEN task on first use.
    /// `listeners` are the statements of the schema's table of listening
    /// sessions.
    pub(crate) fn subscribe(
        &self,
        pool: &PgPool,
        channel: String,
        listeners: listeners::Statements,
    ) -> watch::Receiver<u64> {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (stop, stopped) = oneshot::channel();
            runtime.spawn(listen(
                pool.clone(),
                channel,
                listeners,
                Arc::clone(&self.signal),
                stopped,
            ));
            *listener = Some(stop);
        }
        self.signal.subscribe()
    }
}

fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|n| *n = n.wrapping_add(1));
}

/// Forwards NOTIFYs on `channel` to `signal` until `stopped` resolves.
/// A lost connection is re-established with backoff; since notifications
/// sent meanwhile are gone, every reconnect also wakes the subscribers.
///
/// Each listening session registers its backend pid in `listeners`, because
/// appends only send NOTIFY while that table has a row; a session that comes
/// back after a lost connection registers again, and a stopped store removes
/// its row. Registering also removes the rows of sessions that have ended
/// (a process that died), as [`sweep`] does.
async fn listen(
    pool: PgPool,
    channel: String,
    listeners: listeners::Statements,
    signal: Arc<watch::Sender<u64>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listeners::Statements {
        register,
        unregister,
        ..
    } = listeners;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connect = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            sqlx::query(&register).execute(&mut listener).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            _ = &mut stopped => return,
            connected = connect => connected,
        };
        match connected {
            Ok(mut listener) => {
                bump(&signal);
                let ended = tokio::select! {
                    _ = &mut stopped => None,
                    error = forward(&mut listener, &register, &signal) => Some(error),
                };
                let Some(error) = ended else {
                    // Appends stop sending NOTIFY once no session listens.
                    let done = sqlx::query(&unregister).execute(&mut listener);
                    if tokio::time::timeout(Duration::from_secs(5), done)
                        .await
                        .is_err()
                    {
                        tracing::debug!(%channel, "removing the listener's row timed out");
                    }
                    return;
                };
                tracing::debug!(%error, %channel, "event notification listener lost its connection");
            }
            Err(error) => {
                tracing::debug!(%error, %channel, "event notification listener could not connect");
            }
        }
        bump(&signal);
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Wakes `signal` for each notification until the connection fails.
async fn forward(
    listener: &mut PgListener,
    register: &str,
    signal: &watch::Sender<u64>,
) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => {}
            // The connection was lost and has been re-established as a new
            // session: notifications may have been missed, and the new
            // session must register.
            Ok(None) => {
                if let Err(error) = sqlx::query(register).execute(&mut *listener).await {
                    return error;
                }
            }
            Err(error) => return error,
        }
        bump(signal);
    }
}

/// How often, at most, a store's appends look for rows of listeners that
/// ended without removing them (a process that died), so that appends stop
/// sending NOTIFY to nobody even when no other listener starts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Runs `sweep` (which removes the rows of ended listening sessions) in a
/// task of its own, at most once per [`SWEEP_INTERVAL`] per store (the
/// first time at once).
pub(crate) fn sweep(wakeups: &Wakeups, pool: &PgPool, sweep: &str) {
    let now = tokio::time::Instant::now();
    {
        let mut last = wakeups
            .last_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < SWEEP_INTERVAL) {
            return;
        }
        *last = Some(now);
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool = pool.clone();
    let sql = sweep.to_owned();
    runtime.spawn(async move {
        if let Err(error) = sqlx::query(&sql).execute(&pool).await {
            tracing::debug!(%error, "removing the rows of ended listeners failed");
        }
    });
}
