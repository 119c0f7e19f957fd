//! What can go wrong, as one readable line and an exit code: 1 when the
//! operation failed, 2 for bad usage or no connection.

use std::process::ExitCode;

use es_core::StoreError;

/// A failure of an `es` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The database cannot be reached, or its URL is not valid.
    #[error("cannot connect to {url}: {}", chain(&**.source))]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        source: Box<StoreError>,
    },
    /// The stream, projection, parked event or event named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store refused or failed an operation.
    #[error("{operation} failed: {}", chain(&**.source))]
    Store {
        /// What was being done.
        operation: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The operator did not confirm.
    #[error("{0}")]
    Aborted(String),
    /// Writing the output or serving the console failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The process's exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) | Self::Connect { .. } => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// `operation` failed with `source`.
    pub fn store(
        operation: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Store {
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// An error and its sources on one line, each once (a source whose text the
/// previous one already includes is left out).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = next.source();
    }
    line.replace(['\n', '\r'], " ")
}

/// `url` without its password (of its user part, or a `password`
/// parameter), to be shown.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "the database URL".to_owned();
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let query: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:***@{host}{path}{query}"),
            None => format!("{scheme}://{user}@{host}{path}{query}"),
        },
        None => format!("{scheme}://{authority}{path}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/shop?sslmode=disable"),
            "postgres://app:***@db:5432/shop?sslmode=disable"
        );
        assert_eq!(redact("postgres://db/shop"), "postgres://db/shop");
        assert_eq!(
            redact("postgres://db/shop?user=app&password=secret&sslmode=require"),
            "postgres://db/shop?user=app&password=***&sslmode=require"
        );
        assert_eq!(redact("nonsense"), "the database URL");
    }

    #[test]
    fn a_chain_is_one_line_without_repeats() {
        let inner = std::io::Error::other("refused\nfor good");
        let outer = StoreError::backend("connect", inner);
        let line = chain(&outer);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("refused for good"), "{line}");
    }
}
