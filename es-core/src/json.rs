//! JSON as every store keeps it: the values an append may hold, and the
//! text it sends.
//!
//! The store contract says that what `append` accepts, every read returns
//! equal ([`same_json`] defines "equal"), and that what a store cannot
//! return equal it rejects before writing. PostgreSQL keeps JSON as `jsonb`,
//! whose numbers are decimals without a sign of zero, and reads it back
//! through a decoder that refuses documents nested deeper than
//! [`MAX_JSON_DEPTH`]. So, on every store:
//!
//! - documents nest arrays and objects at most
//!   [`StoreLimits::max_json_depth`](crate::StoreLimits::max_json_depth)
//!   levels deep;
//! - a float is written as a plain decimal with a fractional part
//!   (`1e16` as `10000000000000000.0`), which a decimal keeps exactly, so it
//!   reads back as the same float and not as an integer;
//! - `-0.0`, which no decimal can hold, is rejected;
//! - NUL, which PostgreSQL text cannot hold, is rejected in every string
//!   and key.

use std::fmt;
use std::io;

use serde::Serialize;
use serde_json::Value;

/// The deepest nesting of arrays and objects that a store can read back: the
/// JSON decoder refuses anything deeper. [`StoreLimits`] can lower the limit
/// an append checks, not raise it past this.
///
/// [`StoreLimits`]: crate::StoreLimits
pub const MAX_JSON_DEPTH: usize = 127;

/// Why a JSON value cannot be stored so that it reads back equal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnstorableJson {
    /// Arrays and objects nest deeper than the limit.
    #[error("arrays and objects nest more than {max} levels deep")]
    TooDeep {
        /// The limit, in levels.
        max: usize,
    },
    /// A number is `-0.0`, which reads back as `0.0`.
    #[error("the number at {path} is -0.0, which a store cannot keep apart from 0.0")]
    NegativeZero {
        /// Where, as a JSON Pointer (`""` for the whole value).
        path: String,
    },
    /// A string or key holds NUL, which PostgreSQL text cannot hold.
    #[error("the string at {path} contains a NUL character, which cannot be stored")]
    NulCharacter {
        /// Where, as a JSON Pointer (`""` for the whole value).
        path: String,
    },
}

/// Whether `read` is what a store must return for `written`: the same
/// structure, object members compared as a map (their order is not kept),
/// the same strings, integers as the same integers, and floats as floats
/// with the same bits. An integer never equals a float (`1` is not `1.0`).
#[must_use]
pub fn same_json(written: &Value, read: &Value) -> bool {
    match (written, read) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            _ if a.is_f64() != b.is_f64() => false,
            (Some(x), Some(y)) if a.is_f64() => x.to_bits() == y.to_bits(),
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| same_json(x, y)))
        }
        (a, b) => a == b,
    }
}

/// Checks that `value`, found `level` containers deep in its document, can
/// be stored so that it reads back equal, with documents at most `max_depth`
/// levels deep.
pub(crate) fn check(value: &Value, level: usize, max_depth: usize) -> Result<(), UnstorableJson> {
    walk(value, level, max_depth.min(MAX_JSON_DEPTH)).map_err(Fault::into_error)
}

/// Checks a string field (of metadata) found at `path`.
pub(crate) fn check_str(text: &str, path: &str) -> Result<(), UnstorableJson> {
    if text.contains('\0') {
        return Err(UnstorableJson::NulCharacter {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// A fault found by [`walk`], with the path to it in reverse.
struct Fault {
    kind: FaultKind,
    reversed_path: Vec<String>,
}

enum FaultKind {
    TooDeep(usize),
    NegativeZero,
    Nul,
}

impl Fault {
    fn at(kind: FaultKind) -> Self {
        Self {
            kind,
            reversed_path: Vec::new(),
        }
    }

    fn within(mut self, segment: impl fmt::Display) -> Self {
        if !matches!(self.kind, FaultKind::TooDeep(_)) {
            // JSON Pointer escapes (RFC 6901).
            let segment = segment.to_string().replace('~', "~0").replace('/', "~1");
            self.reversed_path.push(segment);
        }
        self
    }

    fn into_error(self) -> UnstorableJson {
        let path: String = self
            .reversed_path
            .iter()
            .rev()
            .flat_map(|s| ["/", s.as_str()])
            .collect();
        match self.kind {
            FaultKind::TooDeep(max) => UnstorableJson::TooDeep { max },
            FaultKind::NegativeZero => UnstorableJson::NegativeZero { path },
            FaultKind::Nul => UnstorableJson::NulCharacter { path },
        }
    }
}

/// Walks `value`, which sits inside `level` containers, descending no
/// further than `max` levels (so the walk's own depth is bounded).
fn walk(value: &Value, level: usize, max: usize) -> Result<(), Fault> {
    match value {
        Value::Number(n)
            if n.is_f64() && n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) =>
        {
            Err(Fault::at(FaultKind::NegativeZero))
        }
        Value::String(s) if s.contains('\0') => Err(Fault::at(FaultKind::Nul)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
        Value::Array(_) | Value::Object(_) if level >= max => {
            Err(Fault::at(FaultKind::TooDeep(max)))
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, level + 1, max).map_err(|f| f.within(index))?;
            }
            Ok(())
        }
        Value::Object(members) => {
            for (key, member) in members {
                if key.contains('\0') {
                    return Err(Fault::at(FaultKind::Nul).within(key));
                }
                walk(member, level + 1, max).map_err(|f| f.within(key))?;
            }
            Ok(())
        }
    }
}

/// `value` as the compact JSON text a store sends: floats as plain decimals
/// with a fractional part (see the module's documentation).
///
/// # Errors
///
/// The serializer's error, for a value whose `Serialize` fails (never for a
/// [`Value`] or [`Metadata`](crate::Metadata)).
pub(crate) fn to_stored_text<T: Serialize + ?Sized>(value: &T) -> Result<String, String> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, DecimalFloats);
    value
        .serialize(&mut serializer)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// Compact JSON that writes floats without exponents and always with a
/// fractional part, so that a decimal type keeps them exactly and they read
/// back as floats.
struct DecimalFloats;

impl serde_json::ser::Formatter for DecimalFloats {
    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        // `Display` writes the shortest digits that read back as the same
        // float, and never an exponent.
        write!(writer, "{value}")?;
        if value.fract() == 0.0 {
            writer.write_all(b".0")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn depth_counts_containers() {
        assert!(check(&json!(1), 0, 0).is_ok());
        assert!(check(&nested(3), 0, 3).is_ok());
        assert_eq!(
            check(&nested(4), 0, 3),
            Err(UnstorableJson::TooDeep { max: 3 })
        );
        assert!(check(&nested(3), 2, 5).is_ok());
        assert!(check(&nested(4), 2, 5).is_err());
        assert!(check(&nested(MAX_JSON_DEPTH), 0, usize::MAX).is_ok());
        assert!(check(&nested(MAX_JSON_DEPTH + 1), 0, usize::MAX).is_err());
    }

    #[test]
    fn faults_name_their_path() {
        let value = json!({"a": [1, {"b/c~": -0.0}]});
        assert_eq!(
            check(&value, 0, 10),
            Err(UnstorableJson::NegativeZero {
                path: "/a/1/b~1c~0".to_owned()
            })
        );
        assert_eq!(
            check(&json!({"k": ["x", "y\u{0}"]}), 0, 10),
            Err(UnstorableJson::NulCharacter {
                path: "/k/1".to_owned()
            })
        );
        assert_eq!(
            check(&json!({"k\u{0}": 1}), 0, 10),
            Err(UnstorableJson::NulCharacter {
                path: "/k\u{0}".to_owned()
            })
        );
        assert!(check(&json!({"a": "\\u0000", "b": 0.0}), 0, 10).is_ok());
    }

    #[test]
    fn floats_are_written_as_decimals_that_read_back_as_the_same_floats() {
        let floats = [
            1e16,
            -1e16,
            0.1,
            1e-7,
            5e-324,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            1.0,
            123.456,
        ];
        for float in floats {
            let text = to_stored_text(&json!(float)).unwrap();
            assert!(!text.contains('e'), "{text}");
            assert!(text.contains('.'), "{text}");
            let read: Value = serde_json::from_str(&text).unwrap();
            assert!(same_json(&json!(float), &read), "{float} as {text}");
        }
        assert_eq!(to_stored_text(&json!(1e16)).unwrap(), "10000000000000000.0");
        assert_eq!(
            to_stored_text(&json!({"i": 7, "u": u64::MAX})).unwrap(),
            format!(r#"{{"i":7,"u":{}}}"#, u64::MAX)
        );
    }

    #[test]
    fn same_json_tells_integers_from_floats_and_zero_signs() {
        assert!(same_json(
            &json!({"a": 1, "b": [1.5]}),
            &json!({"b": [1.5], "a": 1})
        ));
        assert!(!same_json(&json!(1), &json!(1.0)));
        assert!(!same_json(&json!(0.0), &json!(-0.0)));
        assert!(!same_json(&json!([1, 2]), &json!([1])));
        assert!(!same_json(&json!({"a": 1}), &json!({"b": 1})));
        assert!(same_json(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!same_json(&json!(-1), &json!(u64::MAX)));
    }
}
