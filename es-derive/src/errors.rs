//! Collecting user errors so that all of them are reported at once.

/// The user errors found so far.
///
/// It must be checked: dropping it before [`finish`](Self::finish) took its
/// errors out panics (unless the thread is already panicking), so that no
/// code path can lose an error and expand a model that was never valid.
#[derive(Default)]
pub(crate) struct Errors {
    found: Vec<syn::Error>,
    checked: bool,
}

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.found.push(error);
    }

    /// Records the error of `result`, if any, and returns its value.
    pub(crate) fn record<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// `Ok` when no error was recorded, else all of them, combined.
    pub(crate) fn finish(mut self) -> syn::Result<()> {
        self.checked = true;
        let mut found = std::mem::take(&mut self.found).into_iter();
        let Some(mut combined) = found.next() else {
            return Ok(());
        };
        for error in found {
            combined.combine(error);
        }
        Err(combined)
    }
}

impl Drop for Errors {
    fn drop(&mut self) {
        assert!(
            self.checked || std::thread::panicking(),
            "es-derive: an error accumulator holding {} error(s) was dropped without `finish`",
            self.found.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;

    use super::Errors;

    fn error(message: &str) -> syn::Error {
        syn::Error::new(Span::call_site(), message)
    }

    #[test]
    #[should_panic(expected = "holding 1 error(s) was dropped without `finish`")]
    fn dropping_unchecked_errors_panics() {
        let mut errors = Errors::default();
        errors.push(error("lost"));
        drop(errors);
    }

    /// Even with nothing recorded: a path that forgets the check is caught
    /// by any test that runs it, not only by one with a user error.
    #[test]
    #[should_panic(expected = "holding 0 error(s) was dropped without `finish`")]
    fn dropping_an_unchecked_empty_accumulator_panics() {
        drop(Errors::default());
    }

    /// A panic elsewhere is reported as it is, not turned into an abort by a
    /// second panic in `drop`.
    #[test]
    #[should_panic(expected = "the original panic")]
    fn no_second_panic_while_unwinding() {
        let mut errors = Errors::default();
        errors.push(error("lost"));
        panic!("the original panic");
    }

    #[test]
    fn finish_returns_every_error() {
        let mut errors = Errors::default();
        assert_eq!(errors.record(Ok::<_, syn::Error>(1)), Some(1));
        errors.push(error("first"));
        assert!(errors.record::<()>(Err(error("second"))).is_none());
        let messages: Vec<String> = errors
            .finish()
            .expect_err("two errors were recorded")
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second"]);
        assert!(Errors::default().finish().is_ok());
    }
}
