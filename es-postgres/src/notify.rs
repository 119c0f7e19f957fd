//! Waking subscriptions: in-process after each local append, and across
//! processes through one LISTEN connection per store. A store that reads
//! from a replica wakes its followers once the replica has replayed what
//! the primary held when the wake-up came (see [`Gate`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, oneshot, watch};

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
    /// The primary and the replica, when followers read a replica.
    gate: Option<(PgPool, PgPool)>,
    /// Wake-ups waiting for the replica to replay; `None` without a
    /// replica, or before the first subscriber.
    waiting: Mutex<Option<Waiting>>,
}

/// The requests of the task that wakes followers of a replica.
#[derive(Debug)]
struct Waiting {
    requests: Arc<Notify>,
    /// Dropped with the store, which stops the task.
    _stop: oneshot::Sender<()>,
}

impl Wakeups {
    /// Wake-ups of a store; `gate` holds the primary's and the replica's
    /// pools when followers read a replica.
    pub(crate) fn new(gate: Option<(PgPool, PgPool)>) -> Self {
        Self {
            signal: Arc::new(watch::channel(0).0),
            listener: Mutex::new(None),
            last_sweep: Mutex::new(None),
            gate,
            waiting: Mutex::new(None),
        }
    }

    /// Wakes this process's subscribers (once the replica has replayed
    /// what the primary holds now, when they read one).
    pub(crate) fn wake(&self) {
        match &*self.waiting.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(waiting) => waiting.requests.notify_one(),
            // No replica, or its gate not started (no subscriber yet, or
            // none inside a runtime): wake at once.
            None => bump(&self.signal),
        }
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
            let wake = self.start_gate(&runtime);
            let (stop, stopped) = oneshot::channel();
            runtime.spawn(listen(pool.clone(), channel, listeners, wake, stopped));
            *listener = Some(stop);
        }
        self.signal.subscribe()
    }

    /// How the listener wakes followers: at once, or through the task that
    /// waits for the replica, which this starts.
    fn start_gate(&self, runtime: &tokio::runtime::Handle) -> Wake {
        let Some((primary, replica)) = self.gate.clone() else {
            return Wake::Now(Arc::clone(&self.signal));
        };
        let requests = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        let gate = Gate {
            primary,
            replica,
            signal: Arc::clone(&self.signal),
        };
        runtime.spawn(gate.run(Arc::clone(&requests), stopped));
        *self.waiting.lock().unwrap_or_else(PoisonError::into_inner) = Some(Waiting {
            requests: Arc::clone(&requests),
            _stop: stop,
        });
        Wake::AfterReplay(requests)
    }
}

/// How a wake-up reaches the followers.
#[derive(Debug, Clone)]
enum Wake {
    Now(Arc<watch::Sender<u64>>),
    /// Through [`Gate`].
    AfterReplay(Arc<Notify>),
}

impl Wake {
    fn wake(&self) {
        match self {
            Self::Now(signal) => bump(signal),
            Self::AfterReplay(requests) => requests.notify_one(),
        }
    }
}

/// Wakes followers of a replica once it has replayed the primary's WAL as
/// of the wake-up: woken at once, they would read before the replica has
/// the new events and then wait for the next poll. Wake-ups that arrive
/// while it waits are served by its next round.
struct Gate {
    primary: PgPool,
    replica: PgPool,
    signal: Arc<watch::Sender<u64>>,
}

impl Gate {
    async fn run(self, requests: Arc<Notify>, mut stopped: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = requests.notified() => {}
            }
            let replayed = tokio::time::timeout(REPLAY_WAIT, self.replayed());
            tokio::select! {
                _ = &mut stopped => return,
                waited = replayed => {
                    if let Ok(Err(error)) = waited {
                        tracing::debug!(%error, "waiting for the replica to replay failed");
                    }
                }
            }
            // Replayed, or given up on: the poll is the backstop.
            bump(&self.signal);
        }
    }

    /// Returns once the replica has replayed the primary's WAL as of now.
    async fn replayed(&self) -> Result<(), sqlx::Error> {
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.primary)
            .await?;
        let mut pause = Duration::from_millis(1);
        loop {
            let done: Option<bool> =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
                    .bind(&target)
                    .fetch_one(&self.replica)
                    .await?;
            if done != Some(false) {
                // Replayed, or not a replica at all (null): read now.
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// How long a wake-up waits for the replica before it wakes the followers
/// anyway.
const REPLAY_WAIT: Duration = Duration::from_secs(5);

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
    signal: Wake,
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
                signal.wake();
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
        signal.wake();
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Wakes `signal` for each notification until the connection fails.
async fn forward(listener: &mut PgListener, register: &str, signal: &Wake) -> sqlx::Error {
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
        signal.wake();
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
