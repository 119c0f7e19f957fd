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
    pub(crate) fn subscribe(&self, pool: &PgPool, channel: String) -> watch::Receiver<u64> {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (stop, stopped) = oneshot::channel();
            runtime.spawn(listen(
                pool.clone(),
                channel,
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
async fn listen(
    pool: PgPool,
    channel: String,
    signal: Arc<watch::Sender<u64>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            bump(&signal);
            loop {
                listener.recv().await?;
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
