//! Turning a valid model into code. Nothing here reports user errors: the
//! model was checked by `validate`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Ident, Type};

use crate::parse::{AggregateStruct, EventEnum, EventVariant, Handled, ProjectionStruct, Step};

/// The projection's name, the stored names of the events it handles (from
/// each variant's `Variant` implementation, spanned on the user's
/// `Enum::Variant` so an unknown variant is reported there), and a
/// dispatcher that decodes each event as its variant's payload and hands it
/// to the projection's `Handle` for that payload and sink.
pub(crate) fn projection(model: &ProjectionStruct) -> TokenStream {
    let ProjectionStruct {
        ident,
        krate,
        name,
        version,
        handles,
        ..
    } = model;
    let private = quote!(#krate::__private);
    let version = version.as_ref().map(|v| {
        let value = v.value;
        quote!(const VERSION: u32 = #value;)
    });
    let (event_var, cx_var, ty_var, cx) = (
        local("event"),
        local("cx"),
        local("event_type"),
        local("__Cx"),
    );
    // `<Enum as Variant<KEY>>`, spanned on the variant, so that an unknown
    // one is reported there.
    let parts = handles.iter().map(|h| {
        let (event, key) = variant_key(h, &private);
        quote_spanned!(h.variant.span()=> <#event as #private::Variant<#key>>::NAMES)
    });
    // `Handled<Enum, KEY>`: the route of one variant, which names the
    // variant without requiring it to exist.
    let routes = handles.iter().map(|h| {
        let (event, key) = variant_key(h, &private);
        quote_spanned!(h.variant.span()=> #private::Handled<#event, #key>)
    });
    let bounds = routes
        .clone()
        .map(|route| quote!(#route: #private::Route<Self, #cx>));
    let arms = routes.map(|route| {
        quote! {
            if #private::is_one_of(#ty_var, <#route as #private::Route<Self, #cx>>::NAMES) {
                return <#route as #private::Route<Self, #cx>>::route(self, #event_var, #cx_var).await;
            }
        }
    });
    let name = &name.value;
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #krate::Projection for #ident {
                const NAME: &'static str = #name;
                const EVENT_TYPES: &'static [&'static str] = {
                    const PARTS: &[&[&str]] = &[#(#parts),*];
                    const LEN: usize = #private::names_len(PARTS);
                    const ALL: [&str; LEN] = #private::concat_names::<LEN>(PARTS);
                    &ALL
                };
                #version
            }

            #[automatically_derived]
            impl<#cx> #krate::Dispatch<#cx> for #ident
            where
                #cx: ::core::marker::Send + ?::core::marker::Sized,
                #(#bounds,)*
            {
                async fn dispatch(
                    &self,
                    #event_var: &#krate::RecordedEvent,
                    #cx_var: &mut #cx,
                ) -> ::core::result::Result<(), #krate::BoxError> {
                    let #ty_var = #event_var.event_type.as_str();
                    #(#arms)*
                    ::core::result::Result::Ok(())
                }
            }
        };
    }
}

/// A handled variant's event enum, spanned on the variant, and the
/// variant's key: `(Enum, { variant_key("Variant") })`.
fn variant_key(handled: &Handled, private: &TokenStream) -> (TokenStream, TokenStream) {
    let Handled { event, variant, .. } = handled;
    let key = variant.to_string();
    let event = respan(event.to_token_stream(), variant.span());
    (
        event,
        quote_spanned!(variant.span()=> { #private::variant_key(#key) }),
    )
}

/// `Event`, `Dispatch` to an aggregate's handlers and `Variant` for each
/// variant.
pub(crate) fn event(model: &EventEnum) -> TokenStream {
    let EventEnum {
        ident,
        krate,
        variants,
    } = model;
    let private = quote!(#krate::__private);
    let (recorded, payload_var) = (local("recorded"), local("payload"));
    let names = variants.iter().map(|v| v.name.value.as_str());
    let aliases = variants
        .iter()
        .flat_map(|v| v.aliases.iter().map(|a| a.value.as_str()));
    let event_type_arms = variants.iter().map(|v| {
        let (variant, name) = (&v.ident, &v.name.value);
        quote!(Self::#variant(..) => #name)
    });
    let version_arms = variants.iter().map(|v| {
        let (variant, version) = (&v.ident, v.version.value);
        quote!(Self::#variant(..) => #version)
    });
    let to_data_arms = variants.iter().map(|v| {
        let variant = &v.ident;
        let payload = &v.payload;
        let to_json = quote_spanned!(payload.span()=> #private::to_json::<#payload>(#payload_var));
        quote!(Self::#variant(ref #payload_var) => #to_json)
    });
    let decode_arms = variants.iter().map(|v| {
        let variant = &v.ident;
        let key = variant.to_string();
        let patterns = std::iter::once(v.name.value.as_str())
            .chain(v.aliases.iter().map(|a| a.value.as_str()));
        quote! {
            #(#patterns)|* => <Self as #private::Variant<{ #private::variant_key(#key) }>>::decode(#recorded)
                .map(Self::#variant),
        }
    });
    let variant_impls = variants.iter().map(|v| variant(v, ident, krate));
    let dispatch = aggregate_dispatch(model);
    let quiet = hidden_from_hints(krate);
    quote! {
        const _: () = {
            #(#variant_impls)*

            #[automatically_derived]
            #quiet
            impl #krate::Event for #ident {
                const EVENT_TYPES: &'static [&'static str] = &[#(#names,)* #(#aliases,)*];

                fn event_type(&self) -> &'static str {
                    match *self {
                        #(#event_type_arms,)*
                    }
                }

                fn schema_version(&self) -> u32 {
                    match *self {
                        #(#version_arms,)*
                    }
                }

                fn to_data(
                    &self,
                ) -> ::core::result::Result<#private::Value, #private::serde_json::Error> {
                    match *self {
                        #(#to_data_arms,)*
                    }
                }

                fn decode(
                    #recorded: &#krate::RecordedEvent,
                ) -> ::core::result::Result<Self, #krate::DecodeError> {
                    match #recorded.event_type.as_str() {
                        #(#decode_arms)*
                        _ => ::core::result::Result::Err(#private::unknown_event_type(#recorded)),
                    }
                }
            }

            #dispatch
        };
    }
}

/// `Dispatch<A>` for the enum: each variant to `A`'s `On` handler for its
/// payload.
/// es-core's own event enum (`SystemEvent`, the only one deriving with
/// `crate = "crate"`) is kept out of the compiler's hints: when a user's type
/// is not an event enum, naming it as the one that is misleads.
fn hidden_from_hints(krate: &syn::Path) -> TokenStream {
    if krate.is_ident("crate") {
        quote!(#[diagnostic::do_not_recommend])
    } else {
        TokenStream::new()
    }
}

fn aggregate_dispatch(model: &EventEnum) -> TokenStream {
    let EventEnum {
        ident,
        krate,
        variants,
    } = model;
    let (payload_var, target) = (local("payload"), local("target"));
    let handler_bounds = variants.iter().map(|v| {
        let payload = &v.payload;
        quote_spanned!(payload.span()=> #krate::On<#payload>)
    });
    let dispatch_arms = variants.iter().map(|v| {
        let (variant, payload) = (&v.ident, &v.payload);
        quote!(Self::#variant(#payload_var) => <__Aggregate as #krate::On<#payload>>::on(#target, #payload_var))
    });
    let quiet = hidden_from_hints(krate);
    quote! {
        #[automatically_derived]
        #quiet
        impl<__Aggregate> #krate::__private::Dispatch<__Aggregate> for #ident
        where
            __Aggregate: #(#handler_bounds)+*,
        {
            fn dispatch(self, #target: &mut __Aggregate) {
                match self {
                    #(#dispatch_arms,)*
                }
            }
        }
    }
}

/// `Variant` for one variant: its stored names, its payload and the
/// decoding of its payload, where each stored schema version runs the
/// upcast steps from it to the current version.
fn variant(variant: &EventVariant, enum_ident: &Ident, krate: &syn::Path) -> TokenStream {
    let private = quote!(#krate::__private);
    let recorded = local("recorded");
    let EventVariant {
        ident,
        payload,
        name,
        aliases,
        version,
        ..
    } = variant;
    let current = version.value;
    let key = ident.to_string();
    let (name, aliases) = (&name.value, aliases.iter().map(|a| a.value.as_str()));
    let read_current = quote_spanned!(payload.span()=> #private::payload::<#payload>);
    let older = (1..current).map(|from| {
        let decode = decode_older(variant, from, krate);
        quote!(#from => { #decode })
    });
    quote! {
        #[automatically_derived]
        impl #private::Variant<{ #private::variant_key(#key) }> for #enum_ident {
            type Payload = #payload;

            const NAMES: &'static [&'static str] = &[#name, #(#aliases,)*];

            fn decode(
                #recorded: &#krate::RecordedEvent,
            ) -> ::core::result::Result<#payload, #krate::DecodeError> {
                match #recorded.schema_version {
                    #current => #read_current(#recorded, &#recorded.data),
                    #(#older)*
                    _ => ::core::result::Result::Err(#private::unsupported_version(#recorded, #current)),
                }
            }
        }
    }
}

/// The decoding of a payload stored at schema version `from`: the upcast
/// steps from it to the current version, JSON steps first, then typed ones.
fn decode_older(variant: &EventVariant, from: u32, krate: &syn::Path) -> TokenStream {
    let private = quote!(#krate::__private);
    let (recorded, data_var, value) = (local("recorded"), local("data"), local("value"));
    let EventVariant {
        payload,
        version,
        upcasts,
        ..
    } = variant;
    let mut body = TokenStream::new();
    // The data as it stands: borrowed from the record until a JSON step
    // produces a new value.
    let mut data = quote!(&#recorded.data);
    let mut typed: Option<&Type> = None;
    for step_version in from..version.value {
        let Some(upcast) = upcasts.iter().find(|u| u.from.value == step_version) else {
            continue;
        };
        match (&upcast.step, typed) {
            (Step::Json(function), None) => {
                let input = if step_version == from {
                    quote!(::core::clone::Clone::clone(&#recorded.data))
                } else {
                    quote!(#data_var)
                };
                body.extend(quote! {
                    let #data_var = #private::upcast_json(#recorded, #step_version, #function, #input)?;
                });
                data = quote!(&#data_var);
            }
            (Step::Typed(older), None) => {
                let read = quote_spanned!(older.span()=> #private::payload::<#older>);
                body.extend(quote! {
                    let #value: #older = #read(#recorded, #data)?;
                });
                typed = Some(older);
            }
            (Step::Typed(next), Some(previous)) => {
                body.extend(convert(previous, next, &value));
                typed = Some(next);
            }
            // Ruled out by validation: a JSON step after a typed one.
            (Step::Json(_), Some(_)) => {}
        }
    }
    if let Some(previous) = typed {
        body.extend(convert(previous, payload, &value));
        body.extend(quote!(::core::result::Result::Ok(#value)));
    } else {
        let read_current = quote_spanned!(payload.span()=> #private::payload::<#payload>);
        body.extend(quote!(#read_current(#recorded, #data)));
    }
    body
}

/// `tokens` with every span set to `span`, so that an error about them
/// points there.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut inner = Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = TokenTree::Group(inner);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// A local name of the generated code, invisible to the user's tokens
/// (paths in attributes), so that they cannot clash.
pub(crate) fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// `let value: Next = From::from(value);`, spanned on the older type so that
/// a missing `From` points at it.
fn convert(previous: &Type, next: &Type, value: &Ident) -> TokenStream {
    let span = previous.span();
    let target = respan(next.to_token_stream(), span);
    let from = quote_spanned!(span=> <#target as ::core::convert::From<#previous>>::from);
    quote! {
        let #value: #next = #from(#value);
    }
}

/// `Aggregate`: the category, the event type, `apply` and the snapshot
/// settings.
pub(crate) fn aggregate(model: &AggregateStruct) -> TokenStream {
    let AggregateStruct {
        ident,
        krate,
        category,
        event,
        snapshot,
    } = model;
    let private = quote!(#krate::__private);
    let category = &category.value;
    let event_span = event.span();
    let event_var = local("event");
    let event_type = quote_spanned!(event_span=> type Event = #event;);
    let dispatch = quote_spanned!(event_span=> <#event as #private::Dispatch<Self>>::dispatch);
    let snapshot = snapshot.as_ref().map(|settings| {
        let (every, version) = (settings.every.value, settings.version.value);
        let span: Span = settings.span;
        let to_json = quote_spanned!(span=> #private::to_json::<Self>(self));
        let data = local("data");
        let from_json = quote_spanned!(span=> #private::from_json::<Self>(#data));
        quote! {
            const SNAPSHOT: ::core::option::Option<#krate::SnapshotPolicy> =
                ::core::option::Option::Some(#krate::SnapshotPolicy { every: #every, version: #version });

            fn to_snapshot(
                &self,
            ) -> ::core::result::Result<#private::Value, #private::serde_json::Error> {
                #to_json
            }

            fn from_snapshot(
                #data: &#private::Value,
            ) -> ::core::result::Result<Self, #private::serde_json::Error> {
                #from_json
            }
        }
    });
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #krate::Aggregate for #ident {
                #event_type

                const CATEGORY: &'static str = #category;

                #snapshot

                fn apply(&mut self, #event_var: <Self as #krate::Aggregate>::Event) {
                    #dispatch(#event_var, self);
                }
            }
        };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use crate::driver::{Aggregate, Event, Projection, derive};

    /// The expansion of a valid input, formatted.
    fn pretty(derive: fn(TokenStream) -> TokenStream, input: TokenStream) -> String {
        let output = derive(input);
        assert!(
            !output.to_string().contains("compile_error"),
            "a user error:\n{output}"
        );
        format(&output)
    }

    /// `output`, formatted; fails the test when it does not parse.
    pub(crate) fn format(output: &TokenStream) -> String {
        let file: syn::File = syn::parse2(output.clone())
            .unwrap_or_else(|e| panic!("the expansion does not parse ({e}):\n{output}"));
        prettyplease::unparse(&file)
    }

    #[test]
    fn projection_over_two_enums() {
        insta::assert_snapshot!(pretty(
            derive::<Projection>,
            quote! {
                #[es(name = "order_summaries")]
                #[es(handles(OrderEvent::Placed, OrderEvent::Shipped, customers::CustomerEvent::Registered))]
                struct OrderSummaries;
            }
        ));
    }

    #[test]
    fn projection_with_a_version() {
        insta::assert_snapshot!(pretty(
            derive::<Projection>,
            quote! {
                #[es(name = "order_summaries", version = 2, handles(OrderEvent::Placed))]
                struct OrderSummaries;
            }
        ));
    }

    #[test]
    fn projection_custom_crate_path_and_default_name() {
        insta::assert_snapshot!(pretty(
            derive::<Projection>,
            quote! {
                #[es(crate = "::my_es", handles(AccountEvent::Deposited))]
                struct AccountBalances {
                    table: String,
                }
            }
        ));
    }

    #[test]
    fn event_plain() {
        insta::assert_snapshot!(pretty(
            derive::<Event>,
            quote! {
                enum AccountEvent {
                    Opened(Opened),
                    Deposited(Deposited),
                }
            }
        ));
    }

    #[test]
    fn event_names_aliases_and_upcasts() {
        insta::assert_snapshot!(pretty(
            derive::<Event>,
            quote! {
                enum OrderEvent {
                    #[es(name = "OrderPlaced", alias = "OrderCreated", alias = "PurchaseMade")]
                    #[es(version = 4, upcast(from = 1, with = upcasts::placed_v1))]
                    #[es(upcast(from = 2, type = PlacedV2), upcast(from = 3, type = PlacedV3))]
                    Placed(OrderPlaced),
                    #[es(version = 2, upcast(from = 1, with = upcasts::shipped_v1))]
                    Shipped(OrderShipped),
                }
            }
        ));
    }

    #[test]
    fn event_empty_enum() {
        insta::assert_snapshot!(pretty(
            derive::<Event>,
            quote!(
                enum Nothing {}
            )
        ));
    }

    #[test]
    fn event_custom_crate_path() {
        insta::assert_snapshot!(pretty(
            derive::<Event>,
            quote! {
                #[es(crate = "::my_app::es")]
                enum AccountEvent {
                    #[es(version = 2, upcast(from = 1, type = OpenedV1))]
                    Opened(Opened),
                }
            }
        ));
    }

    #[test]
    fn aggregate_plain() {
        insta::assert_snapshot!(pretty(
            derive::<Aggregate>,
            quote! {
                #[es(event = AccountEvent)]
                struct Account {
                    balance: u64,
                }
            }
        ));
    }

    #[test]
    fn aggregate_with_snapshots() {
        insta::assert_snapshot!(pretty(
            derive::<Aggregate>,
            quote! {
                #[es(category = "Order", event = crate::events::OrderEvent, snapshot(every = 100, version = 2))]
                struct Order {
                    lines: Vec<u64>,
                }
            }
        ));
    }

    #[test]
    fn aggregate_custom_crate_path() {
        insta::assert_snapshot!(pretty(
            derive::<Aggregate>,
            quote! {
                #[es(crate = "my_app::es", category = "Account", event = AccountEvent)]
                #[es(snapshot(every = 50))]
                struct Account;
            }
        ));
    }
}
