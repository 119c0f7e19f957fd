//! How a runner retries, what it does with an event that keeps failing,
//! and its batch size.

use std::time::Duration;

/// What to do with an event whose handler keeps failing, or that cannot be
/// read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the runner at the event and report it; nothing after it is
    /// applied until the cause is fixed.
    Stop,
    /// Set the event aside in the dead-letter table with its error, and go on.
    Park,
}

/// Retries, backoff and what follows them.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ErrorPolicy {
    /// Attempts after the first failure (default 3).
    pub retries: u32,
    /// Delay before the first retry, doubled for each next one (default
    /// 100 ms, at most 5 s).
    pub backoff: Duration,
    /// What happens when the retries are used up (default [`OnFailure::Stop`]).
    pub on_failure: OnFailure,
}

impl ErrorPolicy {
    /// Retry `retries` times, then stop.
    #[must_use]
    pub fn stop_after(retries: u32) -> Self {
        Self {
            retries,
            ..Self::default()
        }
    }

    /// Retry `retries` times, then park the event.
    #[must_use]
    pub fn park_after(retries: u32) -> Self {
        Self {
            retries,
            on_failure: OnFailure::Park,
            ..Self::default()
        }
    }

    /// Sets [`backoff`](Self::backoff).
    #[must_use]
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_millis(100),
            on_failure: OnFailure::Stop,
        }
    }
}

/// Settings of a [`ProjectionRunner`](super::ProjectionRunner).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// Events per batch, and per transaction (default 500). While catching
    /// up, the runner reads 8 batches per query, and holds up to 16
    /// batches in memory.
    pub batch_size: usize,
    /// What to do when a handler fails.
    pub error_policy: ErrorPolicy,
    /// How often a standby runner tries to take the lease (default 500 ms).
    pub standby_interval: Duration,
}

impl RunnerOptions {
    /// Sets [`batch_size`](Self::batch_size) (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets [`error_policy`](Self::error_policy).
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// Sets [`standby_interval`](Self::standby_interval).
    #[must_use]
    pub fn standby_interval(mut self, interval: Duration) -> Self {
        self.standby_interval = interval;
        self
    }
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            error_policy: ErrorPolicy::default(),
            standby_interval: Duration::from_millis(500),
        }
    }
}
