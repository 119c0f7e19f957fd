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
//! Each derive runs the same three steps (`driver`): `parse` reads the input
//! and its `#[es(...)]` attributes into a small model that keeps the
//! original tokens for spans, `validate` checks the model as a whole, and
//! `expand` turns a valid model into code. Every user error is a spanned
//! `syn::Error`, and all of them are reported at once, followed by a
//! `fallback` implementation of the derived trait so that the type's uses
//! add no errors of their own.
//!
//! The derived types cannot be generic: a stored event name, a stream
//! category and a projection's name (which keys its checkpoint) belong to
//! one type, not to each instantiation of one. Each derive answers generic
//! parameters with one error on them, `... cannot be generic`.

use proc_macro::TokenStream;

mod driver;
mod errors;
mod expand;
mod fallback;
mod parse;
mod validate;

/// Derives `es_core::Event` for an enum whose variants each wrap one payload
/// type: stored names, schema versions and the upcast chain.
///
/// ```text
/// #[derive(Event)]
/// enum OrderEvent {
///     #[es(name = "OrderPlaced", alias = "OrderCreated")]
///     Placed(OrderPlaced),
///     #[es(version = 2, upcast(from = 1, with = item_added_v1))]
///     ItemAdded(ItemAdded),
///     #[es(version = 3, upcast(from = 1, with = v1_to_v2), upcast(from = 2, type = ShippedV2))]
///     Shipped(Shipped),
/// }
/// ```
///
/// Variant settings: `name`, `alias` (repeatable), `version` (default 1),
/// `upcast(from = N, with = json_fn)` and `upcast(from = N, type = OldPayload)`.
/// Enum setting: `crate = "path"`. The `es_core::Event` trait documents each
/// one, with a compiled example.
#[proc_macro_derive(Event, attributes(es))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    driver::derive::<driver::Event>(input.into()).into()
}

/// Derives `es_core::Projection` and `es_core::Dispatch` for a struct: its
/// name and the variants it reads, each decoded (upcasts included) and
/// dispatched to its `es_core::Handle` implementation for the variant's
/// payload type. `Dispatch<Cx>` is implemented for each sink `Cx` for which
/// every handled payload has a handler; a missing one is a compile error
/// where the projection is run with that sink.
///
/// ```text
/// #[derive(Projection)]
/// #[es(name = "order_summaries", handles(OrderEvent::Placed, OrderEvent::Paid))]
/// struct OrderSummaries;
/// ```
///
/// Settings: `name` (default: the struct's name in snake case), `handles`
/// (required), `crate = "path"`. The `es_core::Projection` trait documents
/// them, with a compiled example. Like the other derives, it rejects a
/// generic struct.
#[proc_macro_derive(Projection, attributes(es))]
pub fn derive_projection(input: TokenStream) -> TokenStream {
    driver::derive::<driver::Projection>(input.into()).into()
}

/// Derives `es_core::Aggregate` for a struct: its stream category, its
/// event enum, `apply` (each variant to the struct's `es_core::On` handler
/// for the payload type; a missing one is a compile error) and, optionally,
/// snapshots.
///
/// ```text
/// #[derive(Default, Serialize, Deserialize, Aggregate)]
/// #[es(category = "Order", event = OrderEvent, snapshot(every = 50, version = 1))]
/// struct Order { /* ... */ }
/// ```
///
/// Settings: `event` (required), `category` (default: the struct's name),
/// `snapshot(every = N, version = V)`, `crate = "path"`. The
/// `es_core::Aggregate` trait documents them, with a compiled example.
#[proc_macro_derive(Aggregate, attributes(es))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    driver::derive::<driver::Aggregate>(input.into()).into()
}
