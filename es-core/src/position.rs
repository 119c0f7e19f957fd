//! Positions in the global feed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A place in the global feed (`$all`), used as a checkpoint.
///
/// Positions are opaque to applications: they are totally ordered, the same
/// event always has the same position, and reading the feed *after* a
/// position yields exactly the events that follow it. [`Position::START`] lies
/// before every event.
///
/// A position is two numbers chosen by the store (in PostgreSQL, the
/// committing transaction's id and a sequence number within the table). Its
/// text form, also used by serde, is `"{commit}/{sequence}"`.
///
/// ```
/// use es_core::Position;
///
/// let p: Position = "12/7".parse()?;
/// assert!(Position::START < p);
/// assert_eq!(p.to_string(), "12/7");
/// # Ok::<(), es_core::position::ParsePositionError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    commit: u64,
    sequence: u64,
}

impl Position {
    /// Before the first event of the feed.
    pub const START: Self = Self {
        commit: 0,
        sequence: 0,
    };

    /// A position from its two parts. Meant for store implementations; an
    /// application should only use positions that a store returned.
    #[must_use]
    pub const fn from_parts(commit: u64, sequence: u64) -> Self {
        Self { commit, sequence }
    }

    /// The commit part (the transaction order).
    #[must_use]
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The sequence part (the order within and across commits).
    #[must_use]
    pub const fn sequence(self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({self})")
    }
}

/// A text that is not `"{commit}/{sequence}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position {text:?}: expected two unsigned integers as \"commit/sequence\"")]
pub struct ParsePositionError {
    text: String,
}

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParsePositionError { text: s.to_owned() };
        let (commit, sequence) = s.split_once('/').ok_or_else(error)?;
        Ok(Self {
            commit: commit.parse().map_err(|_| error())?,
            sequence: sequence.parse().map_err(|_| error())?,
        })
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_commit_then_sequence() {
        let a = Position::from_parts(5, 90);
        let b = Position::from_parts(6, 1);
        assert!(a < b);
        assert!(Position::from_parts(6, 0) < b);
    }

    #[test]
    fn text_round_trip_and_errors() {
        let p = Position::from_parts(u64::MAX, 3);
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
        for bad in ["", "1", "1/", "/2", "a/b", "1/2/3", "-1/2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
    }
}
