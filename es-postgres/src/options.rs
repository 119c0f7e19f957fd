//! Options of the PostgreSQL store.

use std::time::Duration;

use es_core::StoreLimits;

/// Why a schema name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid schema name {0:?}: use 1 to 48 lower-case ASCII letters, digits and underscores, starting with a letter or underscore"
)]
pub struct InvalidSchemaName(pub String);

/// Options of a [`PgEventStore`](crate::PgEventStore).
///
/// ```
/// use es_postgres::PgStoreOptions;
/// use std::time::Duration;
///
/// let options = PgStoreOptions::new("billing")?.poll_interval(Duration::from_millis(100));
/// assert_eq!(options.schema(), "billing");
/// assert_eq!(options.poll_interval, Duration::from_millis(100));
/// # Ok::<(), es_postgres::InvalidSchemaName>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgStoreOptions {
    schema: String,
    /// Size limits for appends (default: [`StoreLimits::default`]). A
    /// batch's data travels as one JSON array, which PostgreSQL's `jsonb`
    /// caps: `max_batch_bytes` is held to at most 128 MiB.
    pub limits: StoreLimits,
    /// How often a subscription looks for new events when no notification
    /// arrives (default 250 ms). Notifications usually wake it sooner; the
    /// poll is the backstop for wake-ups that were coalesced or lost.
    pub poll_interval: Duration,
    /// How long a read of the feed that ends early waits for committed events
    /// held back by an older transaction that is still running (default 1 s).
    ///
    /// The feed only shows events of transactions older than every running
    /// one, so that none is ever skipped. When a short read finds committed
    /// events held back, it waits for them up to this long, so a reader sees
    /// what was appended before its read; a transaction open for longer (a
    /// long report, a session idle in transaction) holds the feed back past
    /// this wait, and the read returns what is safe to return.
    pub feed_wait: Duration,
    /// How many times an append is retried after a race that left nothing
    /// written (default 3).
    pub append_retries: u32,
}

impl PgStoreOptions {
    /// The store in the PostgreSQL schema `schema`, which
    /// [`migrate`](crate::PgEventStore::migrate) creates. Two applications
    /// sharing a database use two schemas.
    ///
    /// # Errors
    ///
    /// [`InvalidSchemaName`] unless `schema` is a plain lower-case identifier
    /// of at most 48 bytes.
    pub fn new(schema: impl Into<String>) -> Result<Self, InvalidSchemaName> {
        let schema = schema.into();
        let valid = !schema.is_empty()
            && schema.len() <= 48
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit()
            && !schema.starts_with("pg_");
        if !valid {
            return Err(InvalidSchemaName(schema));
        }
        Ok(Self::with_schema(schema))
    }

    fn with_schema(schema: String) -> Self {
        Self {
            schema,
            limits: StoreLimits::default(),
            poll_interval: Duration::from_millis(250),
            feed_wait: Duration::from_secs(1),
            append_retries: 3,
        }
    }

    /// The schema holding the store's tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`poll_interval`](Self::poll_interval).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`feed_wait`](Self::feed_wait).
    #[must_use]
    pub fn feed_wait(mut self, wait: Duration) -> Self {
        self.feed_wait = wait;
        self
    }

    /// Sets [`append_retries`](Self::append_retries).
    #[must_use]
    pub fn append_retries(mut self, retries: u32) -> Self {
        self.append_retries = retries;
        self
    }

    /// [`limits`](Self::limits) with the batch size held to what one `jsonb`
    /// array can carry.
    pub(crate) fn effective_limits(&self) -> StoreLimits {
        let max = self.limits.max_batch_bytes.min(MAX_BATCH_BYTES);
        self.limits.max_batch_bytes(max)
    }

    /// The NOTIFY channel of this schema's appends.
    pub(crate) fn channel(&self) -> String {
        format!("es_events_{}", self.schema)
    }
}

impl Default for PgStoreOptions {
    /// The schema `es`.
    fn default() -> Self {
        Self {
            schema: "es".to_owned(),
            limits: StoreLimits::default(),
            poll_interval: Duration::from_millis(250),
            feed_wait: Duration::from_secs(1),
            append_retries: 3,
        }
    }
}

/// The largest batch an append sends: its data travels as one `jsonb`
/// array, and PostgreSQL limits a `jsonb` value to 256 MiB (in a form that
/// can be larger than the text).
const MAX_BATCH_BYTES: usize = 128 * 1024 * 1024;
