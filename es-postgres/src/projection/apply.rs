//! Applying events with the error policy: a batch in one transaction with
//! its checkpoint, event by event after a failure, parking or stopping at
//! an event that keeps failing or cannot be read, and retrying parked events
//! on request.

use std::time::Duration;

use es_core::observe;
use es_core::{EventStore as _, FeedFilter, Position, Projection, RecordedEvent, StoreError};
use sqlx::{Connection as _, PgConnection};
use tracing::Instrument as _;

use super::delivery::Delivery;
use super::signal::Signal;
use super::{OnFailure, ProjectionError, ProjectionRunner, Stop};
use crate::data::projections::{self, DeadLetter, ParkedEvent, ProjectionState};

/// What applying one event came to.
enum Outcome {
    Applied { rebuild: bool },
    Failed { error: String, attempts: u32 },
}

impl<P, D> ProjectionRunner<P, D>
where
    P: Projection,
    D: Delivery<P>,
{
    /// Applies `events` in one transaction with the checkpoint; on a
    /// handler failure, falls back to one transaction per event with the
    /// error policy. Returns the new position and whether a rebuild was
    /// requested.
    pub(super) async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        signal: &mut Signal<'_>,
    ) -> Result<(Position, bool), Stop> {
        let first = events.first().map_or(Position::START, |e| e.position);
        let span = tracing::info_span!(
            "es.projection.batch",
            db.system.name = "postgresql",
            es.projection = P::NAME,
            es.from_position = %first,
            es.to_position = tracing::field::Empty,
            es.event_count = events.len(),
        );
        let started = std::time::Instant::now();
        let applied = self
            .apply_events(conn, events, signal)
            .instrument(span.clone())
            .await;
        if let Ok((position, _)) = &applied {
            span.record("es.to_position", tracing::field::display(position));
            metrics::counter!(observe::PROJECTION_EVENTS, "projection" => self.key.clone())
                .increment(events.len() as u64);
        }
        metrics::histogram!(observe::PROJECTION_BATCH_DURATION, "projection" => self.key.clone())
            .record(started.elapsed());
        applied
    }

    /// [`apply_batch`](Self::apply_batch) without its span and metrics.
    async fn apply_events(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
        signal: &mut Signal<'_>,
    ) -> Result<(Position, bool), Stop> {
        let last = events.last().map_or(Position::START, |e| e.position);
        let mut tx = conn.begin().await?;
        let mut failed = false;
        for event in events {
            if let Err(error) = D::apply(&self.projection, event, &mut tx).await {
                tracing::debug!(projection = P::NAME, %error, event_id = %event.event_id, "handler failed; retrying the batch event by event");
                failed = true;
                break;
            }
        }
        if !failed {
            let rebuild = self.checkpoint(&mut tx, last, events.len()).await?;
            tx.commit().await?;
            return Ok((last, rebuild));
        }
        tx.rollback().await?;
        let mut rebuild = false;
        for event in events {
            rebuild |= self.apply_one(conn, event, signal).await?;
        }
        Ok((last, rebuild))
    }

    /// Applies one event in its own transaction with its checkpoint, with
    /// the policy's retries, then parks it or stops at it.
    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
        signal: &mut Signal<'_>,
    ) -> Result<bool, Stop> {
        let (error, attempts) = match self.try_apply(conn, event, true, signal).await? {
            Outcome::Applied { rebuild } => return Ok(rebuild),
            Outcome::Failed { error, attempts } => (error, attempts),
        };
        let fields = format!("event {} ({})", event.event_id, event.event_type);
        match self.options.error_policy.on_failure {
            OnFailure::Park => {
                tracing::error!(projection = P::NAME, event_id = %event.event_id, attempts, %error, "handler failed; parking the event");
                let letter = DeadLetter {
                    event_id: event.event_id,
                    stream_id: event.stream_id.as_str(),
                    version: event.version,
                    position: event.position,
                    event_type: &event.event_type,
                    error: &error,
                    attempts,
                    raw: None,
                };
                self.park(conn, &letter, &format!("parked {fields}: {error}"))
                    .await
            }
            OnFailure::Stop => {
                tracing::error!(projection = P::NAME, event_id = %event.event_id, attempts, %error, "handler failed; stopping");
                let failure = format!("{fields}: {error}");
                self.set_state(conn, ProjectionState::Failed, Some(&failure))
                    .await?;
                Err(Stop::Fatal(ProjectionError::Stopped {
                    projection: P::NAME.to_owned(),
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    stream_id: event.stream_id.to_string(),
                    version: event.version,
                    position: event.position,
                    attempts,
                    error,
                }))
            }
        }
    }

    /// Tries to apply `event` in a transaction of its own, up to the
    /// policy's retries, with backoff; with `checkpoint`, the transaction
    /// also moves the checkpoint to it.
    async fn try_apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
        checkpoint: bool,
        signal: &mut Signal<'_>,
    ) -> Result<Outcome, Stop> {
        let policy = self.options.error_policy;
        let mut delay = policy.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut tx = conn.begin().await?;
            let error = match D::apply(&self.projection, event, &mut tx).await {
                Ok(()) => {
                    let rebuild = checkpoint && self.checkpoint(&mut tx, event.position, 1).await?;
                    tx.commit().await?;
                    return Ok(Outcome::Applied { rebuild });
                }
                Err(error) => error.to_string(),
            };
            tx.rollback().await?;
            if attempts > policy.retries {
                return Ok(Outcome::Failed { error, attempts });
            }
            tracing::warn!(projection = P::NAME, event_id = %event.event_id, attempts, %error, "handler failed; retrying");
            if !signal.sleep(delay).await {
                return Err(Stop::ShutDown);
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Parks `letter`, records `failure` as the last error and moves the
    /// checkpoint to it, in one transaction; returns whether a rebuild was
    /// requested.
    async fn park(
        &self,
        conn: &mut PgConnection,
        letter: &DeadLetter<'_>,
        failure: &str,
    ) -> Result<bool, Stop> {
        let statements = &self.store.statements().projections;
        let mut tx = conn.begin().await?;
        projections::park(&mut tx, statements, &self.key, letter, failure).await?;
        let rebuild = self.checkpoint(&mut tx, letter.position, 0).await?;
        tx.commit().await?;
        Ok(rebuild)
    }

    /// Handles a feed read that failed for good. An event that cannot be
    /// read back is parked with its stored text (under [`OnFailure::Park`];
    /// the runner goes on after it, and this returns its position) or
    /// stops the runner at it (under [`OnFailure::Stop`], recorded in the
    /// projection's status). Retrying cannot make it readable, so neither
    /// waits for the policy's retries.
    pub(super) async fn unreadable(
        &self,
        conn: &mut PgConnection,
        error: StoreError,
    ) -> Result<Position, Stop> {
        let park = self.options.error_policy.on_failure == OnFailure::Park;
        if let (
            true,
            StoreError::CorruptEvent {
                position: Some(at),
                reason,
                ..
            },
        ) = (park, &error)
        {
            let raw = self.store.raw_event(*at).await.map_err(Stop::store)?;
            if let Some(raw) = raw {
                tracing::error!(projection = P::NAME, position = %at, %error, "the event cannot be read; parking it");
                let letter = DeadLetter {
                    event_id: raw.event_id,
                    stream_id: &raw.stream_id,
                    version: raw.version,
                    position: *at,
                    event_type: &raw.event_type,
                    error: reason,
                    attempts: 0,
                    raw: Some((raw.data, raw.metadata)),
                };
                let failure = format!("parked the unreadable event at position {at}: {reason}");
                self.park(conn, &letter, &failure).await?;
                return Ok(*at);
            }
        }
        tracing::error!(projection = P::NAME, %error, "the feed cannot be read; stopping");
        self.set_state(conn, ProjectionState::Failed, Some(&error.to_string()))
            .await?;
        Err(Stop::store(error))
    }

    /// Applies again, each in a transaction of its own, the parked events
    /// whose retry was asked for: one that applies leaves the dead-letter
    /// table; one that fails again stays, with its new error.
    pub(super) async fn retry_parked(
        &self,
        conn: &mut PgConnection,
        signal: &mut Signal<'_>,
    ) -> Result<(), Stop> {
        let statements = &self.store.statements().projections;
        let requested = projections::retries_requested(conn, statements, &self.key).await?;
        for letter in requested {
            let outcome = match self.parked_event(&letter).await? {
                Some(event) => self.try_apply(conn, &event, false, signal).await?,
                None => Outcome::Failed {
                    error: format!("no readable event at position {}", letter.position),
                    attempts: 0,
                },
            };
            match outcome {
                Outcome::Applied { .. } => {
                    tracing::info!(projection = P::NAME, event_id = %letter.event_id, "a parked event applied on retry");
                    projections::unpark(conn, statements, letter.id).await?;
                }
                Outcome::Failed { error, attempts } => {
                    tracing::warn!(projection = P::NAME, event_id = %letter.event_id, %error, "a parked event failed again");
                    projections::retry_failed(conn, statements, letter.id, &error, attempts)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The recorded event of a dead letter, read from the feed at its
    /// position; `None` when it cannot be read.
    async fn parked_event(&self, letter: &ParkedEvent) -> Result<Option<RecordedEvent>, Stop> {
        let position = letter.position;
        let Some(before) = position.sequence().checked_sub(1) else {
            return Ok(None);
        };
        let before = Position::from_parts(position.commit(), before);
        match self.store.read_all(before, &FeedFilter::all(), 1).await {
            Ok(events) => Ok(events.into_iter().find(|e| e.position == position)),
            Err(StoreError::CorruptEvent { .. }) => Ok(None),
            Err(error) => Err(Stop::store(error)),
        }
    }
}
