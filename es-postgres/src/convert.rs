//! Integers across the seam between Rust and SQL: checked both ways, never
//! clamped.
//!
//! Rust counts versions, positions and sizes in unsigned types; the tables
//! keep them in `bigint` and `integer`. A value going in that does not fit
//! is handled by what it means (a stream version past the highest one
//! cannot be expected, a read past the end returns nothing); a value coming
//! out that does not fit is a typed error naming where it is.

use es_core::{Position, StoreError};

/// The primary-key bound of a feed read after `after`, or `None` when
/// `after` lies past anything the store can hold (the read returns nothing).
pub(crate) fn feed_after(after: Position) -> Option<(i64, i64)> {
    let tx = i64::try_from(after.commit()).ok()?;
    match i64::try_from(after.sequence()) {
        Ok(seq) => Some((tx, seq)),
        // Every stored sequence is a `bigint`: reading after a larger one in
        // this transaction is reading after its last possible event.
        Err(_) => Some((tx, i64::MAX)),
    }
}

/// A `LIMIT` for `limit` events: `None` (no limit) when it exceeds what a
/// `bigint` counts, which no table reaches.
pub(crate) fn limit(limit: usize) -> Option<i64> {
    i64::try_from(limit).ok()
}

/// A non-negative `bigint` read from the database, or why it is not one.
pub(crate) fn unsigned(value: i64, what: &str) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("{what} is {value}, which is negative"))
}

/// A feed position from a row's `(tx_id, seq)`, or why it is not one.
pub(crate) fn position(tx: i64, seq: i64) -> Result<Position, String> {
    Ok(Position::from_parts(
        unsigned(tx, "the transaction id")?,
        unsigned(seq, "the sequence")?,
    ))
}

/// A position of the feed as the checkpoint columns keep it. Positions come
/// from this store's rows, so they fit; one that does not is refused.
pub(crate) fn checkpoint(position: Position, projection: &str) -> Result<(i64, i64), StoreError> {
    let out_of_range = || StoreError::CorruptRecord {
        location: format!("checkpoint of projection {projection}"),
        reason: format!("position {position} does not fit the checkpoint's bigint columns"),
    };
    Ok((
        i64::try_from(position.commit()).map_err(|_| out_of_range())?,
        i64::try_from(position.sequence()).map_err(|_| out_of_range())?,
    ))
}

/// A count of things held in memory (events of a batch) for a `bigint`
/// column. A `Vec` never holds more than `isize::MAX` elements, so this
/// only fails on a platform whose `usize` is wider than 64 bits.
pub(crate) fn count(n: usize, operation: &'static str) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|_| StoreError::backend(operation, format!("{n} does not fit a bigint")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_bigint_range_return_nothing_or_everything_exactly() {
        assert_eq!(feed_after(Position::START), Some((0, 0)));
        assert_eq!(
            feed_after(Position::from_parts(7, u64::MAX)),
            Some((7, i64::MAX))
        );
        assert_eq!(feed_after(Position::from_parts(u64::MAX, 0)), None);
        assert_eq!(limit(usize::MAX), None);
        assert_eq!(limit(5), Some(5));
    }

    #[test]
    fn negative_values_from_rows_are_refused() {
        assert!(unsigned(-1, "the version").is_err());
        assert!(position(5, -2).unwrap_err().contains("sequence"));
        assert_eq!(position(5, 2), Ok(Position::from_parts(5, 2)));
    }
}
