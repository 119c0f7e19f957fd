//! Stream identifiers: `{Category}-{id}`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest stream id, in bytes of UTF-8.
pub const MAX_STREAM_ID_BYTES: usize = 255;

/// Why a text is not a valid [`StreamId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    /// The id is the empty string.
    #[error("stream id is empty")]
    Empty,
    /// The id is longer than [`MAX_STREAM_ID_BYTES`].
    #[error("stream id is {len} bytes long, more than the {MAX_STREAM_ID_BYTES} allowed")]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// The id contains a control character (including NUL).
    #[error("stream id contains the control character {ch:?} at byte {index}")]
    ControlCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the id.
        index: usize,
    },
}

/// The id of an event stream, validated on construction.
///
/// A stream id is 1 to 255 bytes of UTF-8 without control characters.
/// Cloning one is cheap (the text is shared), so every event read from a
/// stream can carry its id. By
/// convention it reads `{Category}-{id}` (`Order-abc123`); the
/// [category](Self::category) is the text before the first `-`, or the whole
/// id when it has none.
///
/// ```
/// use es_core::StreamId;
///
/// let id = StreamId::new("Order-abc123")?;
/// assert_eq!(id.category(), "Order");
/// assert!(StreamId::new("").is_err());
/// # Ok::<(), es_core::StreamIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    ///
    /// [`StreamIdError`] when `id` is empty, longer than 255 bytes or contains
    /// a control character.
    pub fn new(id: impl Into<String>) -> Result<Self, StreamIdError> {
        let id = id.into();
        validate(&id)?;
        Ok(Self(Arc::from(id)))
    }

    /// Builds `{category}-{id}`, validating the result.
    ///
    /// # Errors
    ///
    /// [`StreamIdError`] as for [`StreamId::new`].
    pub fn from_parts(category: &str, id: impl fmt::Display) -> Result<Self, StreamIdError> {
        Self::new(format!("{category}-{id}"))
    }

    /// The category: the text before the first `-`, or the whole id.
    #[must_use]
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }

    /// The id within the category: the text after the first `-`, or `""`
    /// when there is none.
    ///
    /// ```
    /// let order = es_core::StreamId::from_parts("Order", "a-1")?;
    /// assert_eq!((order.category(), order.id()), ("Order", "a-1"));
    /// # Ok::<(), es_core::StreamIdError>(())
    /// ```
    #[must_use]
    pub fn id(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, id)| id)
    }

    /// The whole stream id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The category of a stream id given as text (see [`StreamId::category`]).
#[must_use]
pub fn category_of(id: &str) -> &str {
    id.split_once('-').map_or(id, |(category, _)| category)
}

fn validate(id: &str) -> Result<(), StreamIdError> {
    if id.is_empty() {
        return Err(StreamIdError::Empty);
    }
    if id.len() > MAX_STREAM_ID_BYTES {
        return Err(StreamIdError::TooLong { len: id.len() });
    }
    if let Some((index, ch)) = id.char_indices().find(|(_, c)| c.is_control()) {
        return Err(StreamIdError::ControlCharacter { ch, index });
    }
    Ok(())
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = StreamIdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for StreamId {
    type Err = StreamIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_is_text_before_first_dash() {
        let id = StreamId::new("Order-abc-1").unwrap();
        assert_eq!(id.category(), "Order");
        assert_eq!(StreamId::new("Inventory").unwrap().category(), "Inventory");
        assert_eq!(StreamId::new("-x").unwrap().category(), "");
    }

    #[test]
    fn limits_are_in_bytes() {
        assert!(StreamId::new("é".repeat(127)).is_ok());
        assert_eq!(
            StreamId::new("é".repeat(128)),
            Err(StreamIdError::TooLong { len: 256 })
        );
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<StreamId>("\"a\\u0000b\"").unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        let ok: StreamId = serde_json::from_str("\"Order-1\"").unwrap();
        assert_eq!(ok.as_str(), "Order-1");
    }
}
