//! Commands decided on two aggregates and written atomically
//! ([`Repository::execute_with`]).

use std::time::Instant;

use tracing::Instrument as _;

use super::{Appended, Repository, Run, replay_outcome};
use crate::observe;
use crate::{
    Aggregate, AppendResult, CommandContext, CommandError, CommandOutcome, EventStore,
    ExpectedVersion, SnapshotStore, StoreError, StreamAppend, StreamId,
};

/// Decides a command `C` on this aggregate together with another one, `B`:
/// the events of both, which
/// [`Repository::execute_with`] writes in one atomic append, each stream
/// checked against the version decided on.
///
/// The classic use is a unique value: an order redeems a coupon only if the
/// coupon (its own aggregate, one stream per code) was not redeemed, and
/// both facts are written together or not at all.
pub trait DecideWith<B: Aggregate, C>: Aggregate {
    /// The domain error of a refusal.
    type Error;

    /// The events for this aggregate and for `other`; either list may be
    /// empty (its stream is then only checked).
    ///
    /// # Errors
    ///
    /// The domain error: nothing is written.
    #[expect(clippy::type_complexity, reason = "one list of events per aggregate")]
    fn decide_with(
        &self,
        other: &B,
        command: &C,
    ) -> Result<(Vec<Self::Event>, Vec<B::Event>), Self::Error>;
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore + SnapshotStore,
{
    /// Runs `command` against the aggregate of `stream` together with the
    /// aggregate of `other_stream` (loaded through `others`, a repository
    /// on the same store), and appends the events decided for both in one
    /// [`append_many`](EventStore::append_many): both streams are written,
    /// each checked against the version decided on, or neither is.
    ///
    /// Everything [`execute`](Self::execute) does holds for both streams:
    /// cached states, retries after another writer's events (on either
    /// stream, at most `max_retries` times), refusals confirmed on the
    /// newest versions, and a command sent again with the same command id
    /// returning its first outcome with `already_applied`.
    ///
    /// Returns the outcome on `stream`, then on `other_stream`.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute); [`CommandError::Conflict`] names the
    /// stream whose check failed last.
    pub async fn execute_with<B, C>(
        &self,
        others: &Repository<B, S>,
        stream: &StreamId,
        other_stream: &StreamId,
        command: &C,
        context: &CommandContext,
    ) -> Result<(CommandOutcome, CommandOutcome), CommandError<<A as DecideWith<B, C>>::Error>>
    where
        A: DecideWith<B, C>,
        B: Aggregate,
        C: Sync,
    {
        let span = tracing::info_span!(
            "es.execute",
            es.aggregate = A::CATEGORY,
            es.stream = %stream,
            es.other_stream = %other_stream,
            es.command = observe::short_type_name::<C>(),
            es.outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = Joint {
            first: self,
            second: others,
            streams: (stream, other_stream),
            context,
        }
        .run(command)
        .instrument(span.clone())
        .await;
        let kind = match &result {
            Ok((first, _)) => observe::CommandOutcomeKind::of::<()>(&Ok(first.clone())),
            Err(CommandError::Rejected(_)) => observe::CommandOutcomeKind::Rejected,
            Err(CommandError::Conflict { .. }) => observe::CommandOutcomeKind::Conflict,
            Err(_) => observe::CommandOutcomeKind::Error,
        };
        span.record("es.outcome", kind.as_str());
        metrics::counter!(observe::COMMANDS, "aggregate" => A::CATEGORY, "outcome" => kind.as_str())
            .increment(1);
        metrics::histogram!(
            observe::COMMAND_DURATION,
            "aggregate" => A::CATEGORY,
            "outcome" => kind.as_str()
        )
        .record(started.elapsed());
        result
    }
}

/// One command on two aggregates.
struct Joint<'a, A, B, S> {
    first: &'a Repository<A, S>,
    second: &'a Repository<B, S>,
    streams: (&'a StreamId, &'a StreamId),
    context: &'a CommandContext,
}

type Outcomes = (CommandOutcome, CommandOutcome);

impl<A, B, S> Joint<'_, A, B, S>
where
    A: Aggregate,
    B: Aggregate,
    S: EventStore + SnapshotStore,
{
    async fn run<C>(self, command: &C) -> Result<Outcomes, CommandError<A::Error>>
    where
        A: DecideWith<B, C>,
        C: Sync,
    {
        let (a, b) = self.streams;
        let mut runs = (self.first.begin(a).await?, self.second.begin(b).await?);
        loop {
            let decision = runs.0.state.decide_with(&runs.1.state, command);
            let (first, second) = match decision {
                Ok((first, second)) if !(first.is_empty() && second.is_empty()) => (first, second),
                decision => {
                    if self.verify(&mut runs).await? > 0 {
                        continue;
                    }
                    if let Some(outcomes) = self.recall(&runs).await? {
                        return Ok(self.replayed(runs, outcomes));
                    }
                    return self.finish(runs, decision.map(drop));
                }
            };
            match self.append(runs, first, second).await? {
                Appended::Done(outcomes) => return Ok(outcomes),
                Appended::Retry(again) => runs = again,
            }
        }
    }

    /// Reads the tails of the runs not yet verified; how many events they
    /// held.
    async fn verify(&self, runs: &mut (Run<A>, Run<B>)) -> Result<usize, StoreError> {
        let (a, b) = self.streams;
        let mut read = 0;
        if !runs.0.verified {
            read += self.first.verify(a, &mut runs.0).await?;
        }
        if !runs.1.verified {
            read += self.second.verify(b, &mut runs.1).await?;
        }
        Ok(read)
    }

    /// The outcomes of the command's first application, if either stream
    /// holds its events (a decision may write to one stream only).
    async fn recall(&self, runs: &(Run<A>, Run<B>)) -> Result<Option<Outcomes>, StoreError> {
        let (a, b) = self.streams;
        let first = self.first.recall(a, self.context, &runs.0).await?;
        let second = self.second.recall(b, self.context, &runs.1).await?;
        if first.is_none() && second.is_none() {
            return Ok(None);
        }
        Ok(Some((
            first.unwrap_or_else(|| untouched(&runs.0)),
            second.unwrap_or_else(|| untouched(&runs.1)),
        )))
    }

    fn replayed(&self, runs: (Run<A>, Run<B>), outcomes: Outcomes) -> Outcomes {
        let (a, b) = self.streams;
        (
            self.first.replayed(a, runs.0, outcomes.0),
            self.second.replayed(b, runs.1, outcomes.1),
        )
    }

    /// A refusal, or a decision of no events: nothing written, both states
    /// back in the caches.
    fn finish<E>(
        &self,
        runs: (Run<A>, Run<B>),
        decision: Result<(), E>,
    ) -> Result<Outcomes, CommandError<E>> {
        let (a, b) = self.streams;
        let outcomes = (unchanged(&runs.0), unchanged(&runs.1));
        self.first.cache().put(a, runs.0.state, runs.0.version);
        self.second.cache().put(b, runs.1.state, runs.1.version);
        decision.map(|()| outcomes).map_err(CommandError::Rejected)
    }

    /// Appends both decisions in one request checked against the runs'
    /// versions.
    async fn append<E>(
        &self,
        mut runs: (Run<A>, Run<B>),
        first: Vec<A::Event>,
        second: Vec<B::Event>,
    ) -> Result<Appended<(Run<A>, Run<B>), Outcomes>, CommandError<E>> {
        let (a, b) = self.streams;
        runs.0.attempts += 1;
        runs.1.attempts += 1;
        let batches = (
            Repository::<A, S>::encode(a, &first, self.context)?,
            Repository::<B, S>::encode(b, &second, self.context)?,
        );
        let ids = (
            batches.0.iter().map(|e| e.event_id).collect(),
            batches.1.iter().map(|e| e.event_id).collect(),
        );
        let request = vec![
            StreamAppend::new(a.clone(), ExpectedVersion::Exact(runs.0.version), batches.0),
            StreamAppend::new(b.clone(), ExpectedVersion::Exact(runs.1.version), batches.1),
        ];
        match self.first.store.append_many(request).await {
            Ok(results) => {
                let [ra, rb]: [AppendResult; 2] =
                    results.try_into().map_err(|_| StoreError::CorruptRecord {
                        location: format!("the append to {a} and {b}"),
                        reason: "the store did not return one result per stream".to_owned(),
                    })?;
                if ra.idempotent_replay {
                    let outcomes = self.recall(&runs).await?.unwrap_or_else(|| {
                        (
                            replay_outcome(&runs.0, ra, ids.0),
                            replay_outcome(&runs.1, rb, ids.1),
                        )
                    });
                    return Ok(Appended::Done(self.replayed(runs, outcomes)));
                }
                let done = (
                    self.first.commit(a, runs.0, first, ra, ids.0).await,
                    self.second.commit(b, runs.1, second, rb, ids.1).await,
                );
                Ok(Appended::Done(done))
            }
            Err(conflict @ StoreError::IdempotencyConflict { .. }) => {
                match self.recall(&runs).await? {
                    Some(outcomes) => Ok(Appended::Done(self.replayed(runs, outcomes))),
                    None => Err(conflict.into()),
                }
            }
            Err(StoreError::WrongExpectedVersion { stream, .. }) => {
                if runs.0.attempts > self.first.options.max_retries {
                    return Err(CommandError::Conflict {
                        stream,
                        attempts: runs.0.attempts,
                    });
                }
                metrics::counter!(observe::COMMAND_CONFLICTS_RETRIED, "aggregate" => A::CATEGORY)
                    .increment(1);
                runs.0.verified = false;
                runs.1.verified = false;
                self.verify(&mut runs).await?;
                Ok(Appended::Retry(runs))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The outcome on a stream that the recalled command did not write to.
fn untouched<T>(run: &Run<T>) -> CommandOutcome {
    CommandOutcome {
        already_applied: true,
        ..unchanged(run)
    }
}

/// The outcome of a run that wrote nothing.
fn unchanged<T>(run: &Run<T>) -> CommandOutcome {
    CommandOutcome {
        stream_version: run.version,
        event_ids: Vec::new(),
        positions: Vec::new(),
        attempts: run.attempts.max(1),
        events_read: run.events_read,
        already_applied: false,
    }
}
