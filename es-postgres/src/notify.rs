//! Waking subscriptions: in-process after each local append, and across
//! processes through one LISTEN connection per store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{oneshot, watch};

/// The wake-up signal of one store: its value changes whenever the feed may
/// have grown.
#[derive(Debug)]
pub(crate) struct Wakeups {
    signal: Arc<watch::Sender<u64>>,
    /// Dropped with the store, which stops the listener task.
    listener: Mutex<Option<oneshot::Sender<()>>>,
}

impl Wakeups {
    pub(crate) fn new() -> Self {
        Self {
            signal: Arc::new(watch::channel(0).0),
            listener: Mutex::new(None),
        }
    }

    /// Wakes this process's subscribers.
    pub(crate) fn wake(&self) {
        bump(&self.signal);
    }

    /// A receiver of wake-ups, starting the LISTEN task on first use.
    /// `listeners` is the schema's table of listening sessions.
    pub(crate) fn subscribe(
        &self,
        pool: &PgPool,
        channel: String,
        listeners: String,
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
/// back after a lost connection registers again.
async fn listen(
    pool: PgPool,
    channel: String,
    listeners: String,
    signal: Arc<watch::Sender<u64>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let register = format!(
        "WITH gone AS (DELETE FROM {listeners} \
         WHERE pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)) \
         INSERT INTO {listeners} (pid) VALUES (pg_backend_pid()) \
         ON CONFLICT (pid) DO UPDATE SET since = now()"
    );
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            sqlx::query(&register).execute(&mut listener).await?;
            bump(&signal);
            loop {
                if listener.try_recv().await?.is_none() {
                    // The connection was lost and has been re-established
                    // as a new session: notifications may have been missed,
                    // and the new session must register.
                    sqlx::query(&register).execute(&mut listener).await?;
                }
                bump(&signal);
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = &mut stopped => return,
            result = session => {
                if let Err(error) = result {
                    tracing::debug!(%error, %channel, "event notification listener lost its connection");
                }
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
