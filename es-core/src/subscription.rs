//! Following the global feed: catch-up, then live.
//!
//! [`follow`] turns any [`EventStore`]'s [`read_all`](EventStore::read_all)
//! into a subscription. It always reads *after the last position it
//! delivered*, so the switch from catch-up to live can neither skip nor repeat
//! an event; a [`FeedWaker`] only decides when to look again.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;

use crate::{EventStore, EventStream, FeedFilter, Position, RecordedEvent, StoreError};

/// Tells a subscription when the feed may have grown.
#[async_trait::async_trait]
pub trait FeedWaker: Send + 'static {
    /// Called before each read of the feed: after `arm`, any commit must make
    /// the next [`wait`](Self::wait) return.
    fn arm(&mut self) {}

    /// Waits until the feed may have new events. Returning early (a spurious
    /// wake-up, a polling interval) is allowed and only costs a read.
    async fn wait(&mut self);
}

/// Tuning of [`follow`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FollowOptions {
    /// Events fetched per read once caught up, and by the first read.
    pub batch_size: usize,
    /// Events fetched per read while catching up (after a read that found
    /// more to read): fewer, larger reads cost less per event. The
    /// subscription holds at most this many events read ahead.
    pub catch_up_batch_size: usize,
    /// First delay after a transient error; doubled up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest delay between retries after transient errors.
    pub max_backoff: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            catch_up_batch_size: 4_000,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A subscription over `store`'s feed from after `after`.
///
/// Transient errors ([`StoreError::is_transient`](crate::StoreError::is_transient)) are retried with backoff,
/// resuming after the last delivered position; any other error is yielded and
/// ends the stream.
pub fn follow<S, W>(
    store: S,
    after: Position,
    filter: FeedFilter,
    waker: W,
    options: FollowOptions,
) -> EventStream
where
    S: EventStore + 'static,
    W: FeedWaker,
{
    let follower = Follower {
        store,
        after,
        filter,
        waker,
        options,
        buffer: VecDeque::new(),
        next: after,
        more: true,
        catching_up: false,
        failed: false,
    };
    futures::stream::unfold(follower, |mut follower| async move {
        let item = follower.next_event().await?;
        Some((item, follower))
    })
    .boxed()
}

/// The state of a [`follow`] subscription.
struct Follower<S, W> {
    store: S,
    after: Position,
    filter: FeedFilter,
    waker: W,
    options: FollowOptions,
    buffer: VecDeque<RecordedEvent>,
    /// Where to read on once `buffer` is delivered.
    next: Position,
    /// Whether to read on at once (rather than wait) then.
    more: bool,
    /// Whether the last read found more to read: the next one reads a
    /// catch-up batch.
    catching_up: bool,
    failed: bool,
}

impl<S: EventStore, W: FeedWaker> Follower<S, W> {
    /// The next event, or the error that ends the subscription; `None`
    /// after that error.
    async fn next_event(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        if self.failed {
            return None;
        }
        let mut backoff = self.options.min_backoff;
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Some(Ok(event));
            }
            // Everything read was delivered: move on to where the read
            // stopped looking, which may be past the last event.
            self.after = self.after.max(self.next);
            if !self.more {
                self.waker.wait().await;
            }
            self.waker.arm();
            match self.read().await {
                Ok(()) => backoff = self.options.min_backoff,
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, after = %self.after, "subscription read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                    self.more = true;
                }
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }

    /// Reads the next page into the buffer: a catch-up batch after a read
    /// that found more to read.
    async fn read(&mut self) -> Result<(), StoreError> {
        let batch = if self.catching_up {
            self.options.catch_up_batch_size
        } else {
            self.options.batch_size
        };
        let page = self
            .store
            .read_feed(self.after, &self.filter, batch.max(1))
            .await?;
        self.next = page.next;
        self.more = page.more;
        self.catching_up = page.more;
        self.buffer.extend(page.events);
        Ok(())
    }
}

/// A [`FeedWaker`] fed by a [`tokio::sync::watch`] channel whose value
/// changes on every commit, with an optional polling interval as backstop.
#[derive(Debug)]
pub struct WatchWaker<T> {
    receiver: tokio::sync::watch::Receiver<T>,
    poll: Option<Duration>,
}

impl<T> WatchWaker<T> {
    /// Wakes on every change of `receiver`'s value, and every `poll` if set.
    #[must_use]
    pub fn new(receiver: tokio::sync::watch::Receiver<T>, poll: Option<Duration>) -> Self {
        Self { receiver, poll }
    }
}

#[async_trait::async_trait]
impl<T: Send + Sync + 'static> FeedWaker for WatchWaker<T> {
    fn arm(&mut self) {
        self.receiver.mark_unchanged();
    }

    async fn wait(&mut self) {
        let changed = self.receiver.changed();
        match self.poll {
            Some(poll) => {
                let _ = tokio::time::timeout(poll, changed).await;
            }
            None => {
                if changed.await.is_err() {
                    // The sender is gone: nothing will ever be appended again,
                    // so wait forever rather than spin.
                    futures::future::pending::<()>().await;
                }
            }
        }
    }
}
