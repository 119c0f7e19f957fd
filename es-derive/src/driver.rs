//! The one path that every derive takes: parse, validate and expand, or, on
//! user errors, all of them with a fallback implementation.

use proc_macro2::TokenStream;
use syn::DeriveInput;

use crate::errors::Errors;
use crate::parse::{AggregateStruct, EventEnum, ProjectionStruct};
use crate::{expand, fallback, parse, validate};

/// The steps of one derive.
pub(crate) trait Derive {
    /// What `parse` reads from the input.
    type Model;

    /// Reads the input, recording errors; returns the model as far as it
    /// could be read, or `None` (after recording why) when too little could.
    fn parse(input: &DeriveInput, errors: &mut Errors) -> Option<Self::Model>;

    /// Checks the model as a whole.
    fn validate(model: &Self::Model, errors: &mut Errors);

    /// The code for a valid model; never a user error.
    fn expand(model: &Self::Model) -> TokenStream;

    /// A minimal implementation of the derived trait(s) for a model with
    /// errors, so that the rest of the user's code compiles and only the
    /// derive's own errors are shown. Empty when none can be written safely.
    fn fallback(input: &DeriveInput, model: &Self::Model) -> TokenStream;
}

/// Runs derive `D` on `input`: its code, or every user error as
/// `compile_error!` followed by its fallback.
pub(crate) fn derive<D: Derive>(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.into_compile_error(),
    };
    let mut errors = Errors::default();
    let model = D::parse(&input, &mut errors);
    if let Some(model) = &model {
        D::validate(model, &mut errors);
    }
    match errors.finish() {
        // `parse` returns no model only after recording an error.
        Ok(()) => model.map(|model| D::expand(&model)).unwrap_or_default(),
        Err(error) => {
            let mut tokens = error.into_compile_error();
            if let Some(model) = &model {
                tokens.extend(D::fallback(&input, model));
            }
            tokens
        }
    }
}

/// `#[derive(Event)]`.
pub(crate) struct Event;

impl Derive for Event {
    type Model = EventEnum;

    fn parse(input: &DeriveInput, errors: &mut Errors) -> Option<EventEnum> {
        parse::event_enum(input, errors)
    }

    fn validate(model: &EventEnum, errors: &mut Errors) {
        validate::event_enum(model, errors);
    }

    fn expand(model: &EventEnum) -> TokenStream {
        expand::event(model)
    }

    fn fallback(input: &DeriveInput, model: &EventEnum) -> TokenStream {
        fallback::event(input, &model.krate)
    }
}

/// `#[derive(Aggregate)]`.
pub(crate) struct Aggregate;

impl Derive for Aggregate {
    type Model = AggregateStruct;

    fn parse(input: &DeriveInput, errors: &mut Errors) -> Option<AggregateStruct> {
        parse::aggregate_struct(input, errors)
    }

    fn validate(model: &AggregateStruct, errors: &mut Errors) {
        validate::aggregate_struct(model, errors);
    }

    fn expand(model: &AggregateStruct) -> TokenStream {
        expand::aggregate(model)
    }

    fn fallback(input: &DeriveInput, model: &AggregateStruct) -> TokenStream {
        fallback::aggregate(input, &model.krate, &model.event)
    }
}

/// `#[derive(Projection)]`.
pub(crate) struct Projection;

impl Derive for Projection {
    type Model = ProjectionStruct;

    fn parse(input: &DeriveInput, errors: &mut Errors) -> Option<ProjectionStruct> {
        parse::projection_struct(input, errors)
    }

    fn validate(model: &ProjectionStruct, errors: &mut Errors) {
        validate::projection_struct(model, errors);
    }

    fn expand(model: &ProjectionStruct) -> TokenStream {
        expand::projection(model)
    }

    fn fallback(input: &DeriveInput, model: &ProjectionStruct) -> TokenStream {
        fallback::projection(input, &model.krate)
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;

    use super::{Aggregate, Event, Projection, derive};

    fn run(derive: fn(TokenStream) -> TokenStream, input: &str) -> String {
        let tokens: TokenStream = input.parse().expect("test input is tokens");
        derive(tokens).to_string()
    }

    /// Each input gives at least one error, never a panic, and output that
    /// parses, fallback included.
    fn assert_rejected(derive: fn(TokenStream) -> TokenStream, inputs: &[&str]) {
        for input in inputs {
            let tokens: TokenStream = input.parse().expect("test input is tokens");
            let output = derive(tokens);
            assert!(
                output.to_string().contains("compile_error"),
                "no error for {input}"
            );
            if let Err(e) = syn::parse2::<syn::File>(output.clone()) {
                panic!("the output for {input} does not parse ({e}): {output}");
            }
        }
    }

    #[test]
    fn user_errors_are_collected() {
        let output = run(
            derive::<Event>,
            r#"enum E {
                #[es(versoin = 2, name = "A", name = "B")]
                A(A),
                #[es(version = 0)]
                B(B),
                C { x: u8 },
            }"#,
        );
        for message in [
            "unknown es attribute `versoin`",
            "repeated es attribute `name`",
            "schema versions start at 1",
            "event variant `C` must wrap exactly one payload type",
        ] {
            assert!(output.contains(message), "missing {message:?} in {output}");
        }
    }

    #[test]
    fn malformed_events_are_rejected() {
        assert_rejected(
            derive::<Event>,
            &[
                "",
                "enum",
                "struct S;",
                "union U { a: u8 }",
                "enum E<T> { A(T) }",
                "enum E { #[es] A(A) }",
                r#"enum E { #[es = "x"] A(A) }"#,
                "enum E { #[es(name)] A(A) }",
                "enum E { #[es(name = 1)] A(A) }",
                r#"enum E { #[es(version = "1")] A(A) }"#,
                "enum E { #[es(version = -1)] A(A) }",
                "enum E { #[es(version = 99999999999)] A(A) }",
                "enum E { #[es(version = 4294967295)] A(A) }",
                "enum E { #[es(upcast)] A(A) }",
                "enum E { #[es(upcast())] A(A) }",
                "enum E { #[es(upcast(from = 1))] A(A) }",
                "enum E { #[es(upcast(from = 1, with = f, type = T))] A(A) }",
                "enum E { #[es(version = 3, upcast(from = 1, type = T), upcast(from = 2, with = f))] A(A) }",
                r#"enum E { #[es(unknown(a, b = 1), name = "")] A(A) }"#,
                r#"enum E { #[es(name = "\u{0}")] A(A), B(A) }"#,
                r#"#[es(crate = "not a path")] enum E {}"#,
                "#[es(crate)] enum E {}",
                "enum E { A, B(u8, u8), C {} }",
                "enum E { A(A), A(A) }",
            ],
        );
    }

    #[test]
    fn malformed_aggregates_are_rejected() {
        assert_rejected(
            derive::<Aggregate>,
            &[
                "struct S;",
                "enum E {}",
                "#[es(event = E)] union U { a: u8 }",
                "#[es(event)] struct S;",
                "#[es(event = E, snapshot)] struct S;",
                "#[es(event = E, snapshot())] struct S;",
                "#[es(event = E, snapshot(every = 0, version = 0))] struct S;",
                "#[es(event = E, snapshot(every = 1), snapshot(every = 2))] struct S;",
                r#"#[es(event = E, category = "a-b")] struct S;"#,
                r#"#[es(event = E, category = "")] struct S<T>(T);"#,
                r#"#[es(event = E, crate = "::x", category = 1)] struct S;"#,
            ],
        );
    }

    #[test]
    fn malformed_projections_are_rejected() {
        assert_rejected(
            derive::<Projection>,
            &[
                "struct S;",
                "#[es(handles(A::B))] enum E {}",
                "#[es(handles)] struct S;",
                "#[es(handles(A))] struct S;",
                "#[es(handles(A::B = 1))] struct S;",
                "#[es(handles(A::B(x)))] struct S;",
                "#[es(handles(A::B, A::B))] struct S;",
                r#"#[es(name = "", handles(A::B))] struct S;"#,
                "#[es(name = 1, handles(A::B))] struct S;",
                "#[es(typo, handles(A::B))] struct S;",
                "#[es(handles(A::B))] struct S<'a, T: Clone>(&'a T) where T: Copy;",
                r#"#[es(crate = "not a path", handles(A::B))] struct S;"#,
            ],
        );
    }

    /// With an error, the derive also implements its trait, so that the
    /// type's uses compile and only the error is shown.
    #[test]
    fn errors_come_with_a_fallback() {
        for (derive, input, fallback) in [
            (
                derive::<Event> as fn(_) -> _,
                "enum E { #[es(versoin = 2)] A(A) }",
                ":: es_core :: Event for E",
            ),
            (
                derive::<Aggregate>,
                "#[es(event = E, typo)] struct S;",
                ":: es_core :: Aggregate for S",
            ),
            (
                derive::<Projection>,
                "#[es(handles(E::A), typo)] struct S;",
                ":: es_core :: Projection for S",
            ),
            (
                derive::<Projection>,
                r#"#[es(crate = "my::es", handles(E::A), typo)] struct S;"#,
                "my :: es :: Projection for S",
            ),
            // Reading stopped at `name`, but no `crate` key was left unread.
            (
                derive::<Projection>,
                "#[es(name = 1, handles(E::A))] struct S;",
                ":: es_core :: Projection for S",
            ),
            // `crate` starting a path is not a `crate` key.
            (
                derive::<Aggregate>,
                "#[es(event = crate::events::E, category = 1)] struct S;",
                ":: es_core :: Aggregate for S",
            ),
        ] {
            let output = run(derive, input);
            assert!(
                output.contains(fallback),
                "no fallback for {input}: {output}"
            );
        }
    }

    /// No fallback where it could not be written without new errors: an
    /// aggregate without its event type, or a `crate` path that was not
    /// read.
    #[test]
    fn no_fallback_when_it_would_guess() {
        for (derive, input) in [
            (
                derive::<Aggregate> as fn(_) -> _,
                r#"#[es(category = "Account")] struct S;"#,
            ),
            (derive::<Event>, r#"#[es(crate = "not a path")] enum E {}"#),
            (derive::<Event>, "#[es(crate)] enum E {}"),
            (
                derive::<Projection>,
                r#"#[es(name = 1, crate = "my::es", handles(E::A))] struct S;"#,
            ),
        ] {
            let output = run(derive, input);
            assert!(output.contains("compile_error"), "no error for {input}");
            assert!(!output.contains("impl"), "a fallback for {input}: {output}");
        }
    }
}
