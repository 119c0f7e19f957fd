//! A projection's lease: a session advisory lock on a connection of its
//! own. Only the holder applies events, and it applies them on that
//! connection, so a runner that lost its lease cannot commit.

use std::time::Duration;

use sqlx::{Connection as _, PgConnection};

use super::signal::Signal;
use crate::PgEventStore;
use crate::data::projections;

/// Waits until this runner holds projection `name`'s lease, trying every
/// `interval`; `None` when shut down meanwhile.
pub(super) async fn acquire(
    store: &PgEventStore,
    name: &str,
    interval: Duration,
    signal: &mut Signal<'_>,
) -> Option<PgConnection> {
    let options = store.pool().connect_options();
    let statements = &store.statements().projections;
    loop {
        if signal.fired() {
            return None;
        }
        match PgConnection::connect_with(&options).await {
            Ok(mut conn) => match projections::take_lease(&mut conn, statements, name).await {
                Ok(true) => return Some(conn),
                Ok(false) => drop(conn.close().await),
                Err(error) => {
                    tracing::debug!(projection = name, %error, "taking the lease failed");
                }
            },
            Err(error) => {
                tracing::debug!(projection = name, %error, "connecting for the lease failed");
            }
        }
        if !signal.sleep(interval).await {
            return None;
        }
    }
}

/// Gives the lease up at once (closing the connection would release it
/// only when the server notices).
pub(super) async fn release(store: &PgEventStore, name: &str, mut lease: PgConnection) {
    let statements = &store.statements().projections;
    let _ = projections::release_lease(&mut lease, statements, name).await;
    let _ = lease.close().await;
}
