//! Derive macros for `es-core`: `#[derive(Event)]`, `#[derive(Aggregate)]`
//! and `#[derive(Projection)]`.
//!
//! This crate is an implementation detail of `es-core`, which re-exports its
//! macros behind the default `derive` feature; depend on `es-core` instead.
//! The generated code refers to `::es_core` (change it with
//! `#[es(crate = "path")]`) and reaches helpers only through
//! `es_core::__private`, which is why `es-core` pins this crate's exact
//! version.
//!
//! Each derive runs three steps: `parse` reads the input and its
//! `#[es(...)]` attributes into a small model that keeps the original tokens
//! for spans, `validate` checks the model as a whole, and `expand` turns a
//! valid model into code. Every user error is a spanned `syn::Error`, and all
//! of them are reported at once.

use proc_macro::TokenStream;

mod errors;
mod expand;
mod parse;
mod validate;

/// Derives `es_core::Event` for an enum whose variants each wrap one payload
/// type. See the `es_core::Event` documentation for the attributes.
#[proc_macro_derive(Event, attributes(es))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand::event(input.into()).into()
}

/// Derives `es_core::Projection` and `es_core::Dispatch` for a struct:
/// `#[es(name = "...", handles(EventEnum::Variant, ...))]`. See the
/// `es_core::Projection` documentation.
#[proc_macro_derive(Projection, attributes(es))]
pub fn derive_projection(input: TokenStream) -> TokenStream {
    expand::projection(input.into()).into()
}

/// Derives `es_core::Aggregate` for a struct. See the `es_core::Aggregate`
/// documentation for the attributes.
#[proc_macro_derive(Aggregate, attributes(es))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    expand::aggregate(input.into()).into()
}
