//! Command conformance: a command with a command id takes effect once,
//! however many times it is sent, and every sender gets its first outcome.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::join_all;
use uuid::Uuid;

use super::repository::{
    Account, AccountError, AccountEvent, Deposit, Deposited, Open, Withdraw, account, open_with,
    stored,
};
use crate::testing::hooked::{Hooked, Hooks};
use crate::{
    AppendResult, CommandContext, CommandError, CommandOutcome, Decide, EventStore, Repository,
    SnapshotStore, StoreError,
};

/// Deposits the current balance again, one cent per event (at least one):
/// sent again after it was applied, it decides more events than the first
/// time.
struct MatchBalance;

impl Decide<MatchBalance> for Account {
    type Error = AccountError;

    fn decide(&self, _: &MatchBalance) -> Result<Vec<AccountEvent>, AccountError> {
        if self.owner.is_none() {
            return Err(AccountError::NotOpen);
        }
        let count = self.balance.max(1);
        Ok((0..count)
            .map(|_| AccountEvent::Deposited(Deposited { cents: 1 }))
            .collect())
    }
}

/// The context of command `n`.
fn keyed(n: u128) -> CommandContext {
    CommandContext::for_command(Uuid::from_u128(n))
}

/// Sends command `n` through `first`, then again through `again`; checks
/// that the second run recognizes the first and returns its outcome.
async fn twice<C, S>(
    first: &Repository<Account, S>,
    again: &Repository<Account, S>,
    id: &crate::StreamId,
    command: &C,
    n: u128,
) -> CommandOutcome
where
    Account: Decide<C, Error = AccountError>,
    C: Sync,
    S: EventStore + SnapshotStore,
{
    let applied = first
        .execute(id, command, &keyed(n))
        .await
        .unwrap_or_else(|e| panic!("command {n}: {e}"));
    let recognized = again
        .execute(id, command, &keyed(n))
        .await
        .unwrap_or_else(|e| panic!("command {n} sent again: {e}"));
    assert_same_outcome(&applied, &recognized);
    applied
}

/// What two outcomes of one command must share.
#[track_caller]
fn assert_same_outcome(first: &CommandOutcome, again: &CommandOutcome) {
    assert!(!first.already_applied, "the first run applies the command");
    assert!(again.already_applied, "the second run recognizes it");
    assert_eq!(again.stream_version, first.stream_version);
    assert_eq!(again.event_ids, first.event_ids);
    assert_eq!(again.positions, first.positions);
}

/// A command sent again takes effect once and returns its first outcome:
/// when it would now be refused, when it decides the same events, when it
/// decides more, after later commands, and from a repository without a
/// cache.
pub async fn repository_command_sent_again_takes_effect_once<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let repo = Repository::<Account, _>::new(store.clone());
    let fresh = Repository::<Account, _>::new(store.clone());
    let id = account("1");

    // Refused when decided again (already open).
    twice(&repo, &repo, &id, &Open("ada"), 1).await;
    // The same events decided again: the store's replay.
    let deposit = twice(&repo, &repo, &id, &Deposit(5), 2).await;
    // After a later command, and from a repository that never saw it.
    twice(&repo, &repo, &id, &Deposit(1), 3).await;
    let again = fresh
        .execute(&id, &Deposit(5), &keyed(2))
        .await
        .expect("deposit again");
    assert_same_outcome(&deposit, &again);
    // More events decided the second time (the balance grew).
    let matched = twice(&repo, &repo, &id, &MatchBalance, 4).await;
    assert_eq!(matched.event_ids.len(), 6);
    // Refused when decided again (the balance is gone).
    twice(&repo, &fresh, &id, &Withdraw(12), 5).await;

    let events = stored(&store, &id).await;
    assert_eq!(
        events.len(),
        1 + 1 + 1 + 6 + 1,
        "each command took effect once"
    );
    assert_eq!(repo.load(&id).await.expect("loading").state.balance, 0);
    // The event ids are the ones derived from the command ids.
    let derived = [(1, 0), (2, 0), (3, 0)]
        .into_iter()
        .chain((0..6).map(|index| (4, index)))
        .chain([(5, 0)])
        .map(|(command, index)| crate::command_event_id(Uuid::from_u128(command), &id, index));
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, derived.collect::<Vec<_>>());
}

/// The same command sent by 8 tasks at once takes effect once, and every
/// sender gets the same outcome.
pub async fn repository_same_command_from_8_tasks_takes_effect_once<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let id = account("1");
    open_with(&Repository::<Account, _>::new(store.clone()), &id, 10).await;
    let context = CommandContext::for_command(Uuid::now_v7());
    let senders = (0..8).map(|_| {
        let (store, id, context) = (store.clone(), id.clone(), context.clone());
        async move {
            // A repository each, as separate processes would have.
            Repository::<Account, _>::new(store)
                .execute(&id, &Deposit(7), &context)
                .await
                .expect("every sender succeeds")
        }
    });
    let outcomes = join_all(senders).await;
    let applied: Vec<&CommandOutcome> = outcomes.iter().filter(|o| !o.already_applied).collect();
    assert_eq!(
        applied.len(),
        1,
        "exactly one sender applied it: {outcomes:?}"
    );
    for outcome in &outcomes {
        assert_eq!(outcome.stream_version, applied[0].stream_version);
        assert_eq!(outcome.event_ids, applied[0].event_ids);
        assert_eq!(outcome.positions, applied[0].positions);
    }
    let loaded = Repository::<Account, _>::new(store.clone())
        .load(&id)
        .await
        .expect("loading");
    assert_eq!((loaded.version, loaded.state.balance), (3, 17));
}

/// A command that was refused wrote nothing, so sent again it is decided
/// again; a command without a command id is a new command each time.
pub async fn repository_refused_or_unkeyed_commands_are_decided_again<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let repo = Repository::<Account, _>::new(store.clone());
    let id = account("1");
    open_with(&repo, &id, 5).await;
    let withdraw = CommandContext::for_command(Uuid::now_v7());
    let refused = repo.execute(&id, &Withdraw(10), &withdraw).await;
    assert!(
        matches!(
            refused.as_ref().map_err(|e| e.rejection()),
            Err(Some(AccountError::InsufficientFunds { balance: 5 }))
        ),
        "{refused:?}"
    );
    repo.execute(&id, &Deposit(5), &CommandContext::new())
        .await
        .expect("a deposit");
    let accepted = repo
        .execute(&id, &Withdraw(10), &withdraw)
        .await
        .expect("decided again, and accepted");
    assert!(!accepted.already_applied);

    let unkeyed = CommandContext::new().with_correlation_id("flow-1");
    for _ in 0..2 {
        let outcome = repo
            .execute(&id, &Deposit(3), &unkeyed)
            .await
            .expect("a deposit");
        assert!(!outcome.already_applied);
    }
    assert_eq!(repo.load(&id).await.expect("loading").state.balance, 6);
}

/// A reaction to an event delivered twice issues its command once; another
/// reaction to the same event issues its own.
pub async fn repository_redelivered_event_reaction_takes_effect_once<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let repo = Repository::<Account, _>::new(store.clone());
    let id = account("1");
    open_with(&repo, &id, 0).await;
    let opened = stored(&store, &id).await.remove(0);
    let fresh = Repository::<Account, _>::new(store.clone());
    for delivery in [&repo, &fresh, &repo] {
        delivery
            .execute(
                &id,
                &Deposit(100),
                &CommandContext::caused_by(&opened, "welcome_bonus"),
            )
            .await
            .expect("the bonus");
    }
    repo.execute(
        &id,
        &Deposit(1),
        &CommandContext::caused_by(&opened, "loyalty_point"),
    )
    .await
    .expect("the point");
    assert_eq!(repo.load(&id).await.expect("loading").state.balance, 101);
    let events = stored(&store, &id).await;
    assert_eq!(events.len(), 4);
    assert!(
        events[2..]
            .iter()
            .all(|e| e.metadata.causation_id == Some(opened.event_id))
    );
}

/// Loses the reply of the next append that writes: the caller gets a
/// transient error although the events were stored.
struct LoseNextReply(AtomicBool);

#[async_trait::async_trait]
impl<S: EventStore> Hooks<S> for LoseNextReply {
    async fn after_append(
        &self,
        _: &S,
        result: Result<AppendResult, StoreError>,
    ) -> Result<AppendResult, StoreError> {
        match result {
            Ok(written) if !written.idempotent_replay && self.0.swap(false, Ordering::SeqCst) => {
                Err(StoreError::backend(
                    "append",
                    "the connection closed before the reply",
                ))
            }
            other => other,
        }
    }
}

/// A command whose append was stored but whose reply was lost is sent
/// again by a process that never saw it: it takes effect once and gets the
/// first outcome.
pub async fn repository_command_whose_reply_was_lost_takes_effect_once<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let id = account("1");
    open_with(&Repository::<Account, _>::new(store.clone()), &id, 10).await;
    let losing = Repository::<Account, _>::new(Hooked::new(
        store.clone(),
        LoseNextReply(AtomicBool::new(true)),
    ));
    let context = keyed(7);
    match losing.execute(&id, &Withdraw(10), &context).await {
        Err(CommandError::Store(error)) => assert!(error.is_transient(), "{error:?}"),
        other => panic!("expected a lost reply, got {other:?}"),
    }
    // The withdrawal is stored: sent again, it would now be refused.
    let retried = Repository::<Account, _>::new(store.clone())
        .execute(&id, &Withdraw(10), &context)
        .await
        .expect("sent again");
    assert!(retried.already_applied);
    assert_eq!(retried.stream_version, 3);
    assert_eq!(
        retried.event_ids,
        [crate::command_event_id(Uuid::from_u128(7), &id, 0)]
    );
    let events = stored(&store, &id).await;
    assert_eq!(events.len(), 3, "the withdrawal took effect once");
}
