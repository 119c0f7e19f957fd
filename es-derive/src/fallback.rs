//! What a derive emits next to its errors: a minimal implementation of the
//! derived trait(s), so that the rest of the user's code still compiles and
//! the user sees the derive's own errors, not one more at every use of the
//! type.
//!
//! Every method body is `::core::unreachable!()` and every constant a
//! harmless value: the crate does not build anyway. An implementation must
//! not add an error of its own, so what a trait requires of the type
//! (`Send`, `Default`, an associated type's trait) is written as a
//! where-clause under a needless `for<'__es>`, which the compiler does not
//! check at the impl (trivial bounds are unstable, rust-lang/rust#48214): a
//! type that lacks it fails where it is used as such, not here. The type's
//! own generic parameters and where-clause are kept, so that the fallback of
//! a generic type (an error of its own) compiles too.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Data, DeriveInput, Fields, GenericParam, Lifetime, Path, Type};

use crate::expand::local;

/// `Event` with no stored names, `Dispatch<A>` for every `A` (no handler
/// required) and `Variant` with no names for each variant, so that an
/// aggregate or a projection that names the enum compiles.
pub(crate) fn event(input: &DeriveInput, krate: &Path) -> TokenStream {
    let private = quote!(#krate::__private);
    let required = quote! {
        Self: ::core::marker::Sized + ::core::marker::Send + ::core::marker::Sync + 'static
    };
    let Header {
        params,
        self_ty,
        where_clause,
    } = Header::new(input, None, &[unchecked(&required)]);
    let aggregate = local("__Aggregate");
    // `dispatch` takes `self` by value.
    let dispatch = Header::new(
        input,
        Some(GenericParam::Type(aggregate.clone().into())),
        &[unchecked(&quote!(Self: ::core::marker::Sized))],
    );
    let (dispatch_params, dispatch_where) = (&dispatch.params, &dispatch.where_clause);
    let variants = variants(input, krate);
    let unreachable = quote!(::core::unreachable!());
    quote! {
        const _: () = {
            #variants

            #[automatically_derived]
            impl #params #krate::Event for #self_ty #where_clause {
                const EVENT_TYPES: &'static [&'static str] = &[];

                fn event_type(&self) -> &'static str {
                    #unreachable
                }

                fn schema_version(&self) -> u32 {
                    #unreachable
                }

                fn to_data(
                    &self,
                ) -> ::core::result::Result<#private::Value, #private::serde_json::Error> {
                    #unreachable
                }

                fn decode(
                    _: &#krate::RecordedEvent,
                ) -> ::core::result::Result<Self, #krate::DecodeError> {
                    #unreachable
                }
            }

            #[automatically_derived]
            impl #dispatch_params #private::Dispatch<#aggregate> for #self_ty #dispatch_where {
                fn dispatch(self, _: &mut #aggregate) {
                    #unreachable
                }
            }
        };
    }
}

/// A `Variant` with no names for each variant of an enum, whose payload is
/// the variant's single field (or `Unread`, which every projection handles,
/// when it has another shape). For a struct or a union, which have no
/// variants, one for every variant key, with the payload `Unread`: a
/// projection that names the type as an event enum then compiles too.
fn variants(input: &DeriveInput, krate: &Path) -> TokenStream {
    let private = quote!(#krate::__private);
    let body = |payload: TokenStream| {
        quote! {
            type Payload = #payload;

            const NAMES: &'static [&'static str] = &[];

            fn decode(
                _: &#krate::RecordedEvent,
            ) -> ::core::result::Result<#payload, #krate::DecodeError> {
                ::core::unreachable!()
            }
        }
    };
    let Data::Enum(data) = &input.data else {
        let key = local("__VARIANT");
        let Header {
            params,
            self_ty,
            where_clause,
        } = Header::new(input, Some(syn::parse_quote!(const #key: u64)), &[]);
        let body = body(quote!(#private::Unread));
        return quote! {
            #[automatically_derived]
            impl #params #private::Variant<#key> for #self_ty #where_clause {
                #body
            }
        };
    };
    let Header {
        params,
        self_ty,
        where_clause,
    } = Header::new(input, None, &[]);
    // A repeated variant is the compiler's error; a second impl would add one.
    let mut seen = HashSet::new();
    data.variants
        .iter()
        .filter(|variant| seen.insert(variant.ident.to_string()))
        .map(|variant| {
            let key = variant.ident.to_string();
            let payload = match &variant.fields {
                Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                    fields.unnamed[0].ty.to_token_stream()
                }
                _ => quote!(#private::Unread),
            };
            let body = body(payload);
            quote! {
                #[automatically_derived]
                impl #params #private::Variant<{ #private::variant_key(#key) }>
                    for #self_ty #where_clause
                {
                    #body
                }
            }
        })
        .collect()
}

/// `Aggregate` with the user's event type, an empty category and no
/// snapshots. Emitted only when the event type was read: a placeholder would
/// turn every use of the real one (in `Decide`, in tests) into a type
/// mismatch.
pub(crate) fn aggregate(input: &DeriveInput, krate: &Path, event: &Type) -> TokenStream {
    let required = quote! {
        Self: ::core::default::Default + ::core::marker::Send + ::core::marker::Sync + 'static
    };
    let Header {
        params,
        self_ty,
        where_clause,
    } = Header::new(
        input,
        None,
        &[
            unchecked(&required),
            unchecked(&quote!(#event: #krate::Event)),
        ],
    );
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #params #krate::Aggregate for #self_ty #where_clause {
                type Event = #event;

                const CATEGORY: &'static str = "";

                fn apply(&mut self, _: <Self as #krate::Aggregate>::Event) {
                    ::core::unreachable!()
                }
            }
        };
    }
}

/// `Projection` with an empty name and no event types, and `Dispatch<Cx>`
/// for every sink (no `Handle` required).
pub(crate) fn projection(input: &DeriveInput, krate: &Path) -> TokenStream {
    let required = unchecked(&quote! {
        Self: ::core::marker::Send + ::core::marker::Sync + 'static
    });
    let Header {
        params,
        self_ty,
        where_clause,
    } = Header::new(input, None, std::slice::from_ref(&required));
    let cx = local("__Cx");
    let dispatch = Header::new(
        input,
        Some(GenericParam::Type(cx.clone().into())),
        &[
            quote!(#cx: ::core::marker::Send + ?::core::marker::Sized),
            required,
        ],
    );
    let (dispatch_params, dispatch_where) = (&dispatch.params, &dispatch.where_clause);
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #params #krate::Projection for #self_ty #where_clause {
                const NAME: &'static str = "";
                const EVENT_TYPES: &'static [&'static str] = &[];
            }

            #[automatically_derived]
            impl #dispatch_params #krate::Dispatch<#cx> for #self_ty #dispatch_where {
                async fn dispatch(
                    &self,
                    _: &#krate::RecordedEvent,
                    _: &mut #cx,
                ) -> ::core::result::Result<(), #krate::BoxError> {
                    ::core::unreachable!()
                }
            }
        };
    }
}

/// `predicate` under a needless `for<'__es>`, so that the compiler checks it
/// where the impl is used, not at the impl.
fn unchecked(predicate: &TokenStream) -> TokenStream {
    let lifetime = Lifetime::new("'__es", Span::mixed_site());
    quote!(for<#lifetime> #predicate)
}

/// The parts of `impl<...> Trait for Type<...> where ...` for the input
/// type.
struct Header {
    /// The type's generic parameters, with the trait's own after the
    /// lifetimes.
    params: TokenStream,
    /// The type and its parameters.
    self_ty: TokenStream,
    /// The type's where-clause and `predicates`.
    where_clause: TokenStream,
}

impl Header {
    fn new(input: &DeriveInput, extra: Option<GenericParam>, predicates: &[TokenStream]) -> Self {
        let ident = &input.ident;
        let (_, type_params, _) = input.generics.split_for_impl();
        let mut generics = input.generics.clone();
        if let Some(extra) = extra {
            let lifetimes = generics.lifetimes().count();
            generics.params.insert(lifetimes, extra);
        }
        let (params, _, _) = generics.split_for_impl();
        let own = input
            .generics
            .where_clause
            .iter()
            .flat_map(|clause| clause.predicates.iter());
        let mut predicates = own
            .map(ToTokens::to_token_stream)
            .chain(predicates.iter().cloned())
            .peekable();
        let where_clause = if predicates.peek().is_some() {
            quote!(where #(#predicates,)*)
        } else {
            TokenStream::new()
        };
        Self {
            params: quote!(#params),
            self_ty: quote!(#ident #type_params),
            where_clause,
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use crate::driver::{Aggregate, Event, Projection, derive};
    use crate::expand::tests::format;

    #[test]
    fn event_with_an_error() {
        insta::assert_snapshot!(format(&derive::<Event>(quote! {
            enum AccountEvent {
                #[es(versoin = 2)]
                Opened(Opened),
                Closed,
            }
        })));
    }

    /// A generic struct: the type's parameters and where-clause are kept, and
    /// `VariantNames` is implemented for every key.
    #[test]
    fn event_on_a_generic_struct() {
        insta::assert_snapshot!(format(&derive::<Event>(quote! {
            struct Opened<'a, T: Clone>
            where
                T: Send,
            {
                owner: &'a T,
            }
        })));
    }

    #[test]
    fn aggregate_with_an_error() {
        insta::assert_snapshot!(format(&derive::<Aggregate>(quote! {
            #[es(event = crate::events::AccountEvent, categroy = "Account")]
            struct Account;
        })));
    }

    #[test]
    fn projection_with_an_error_and_a_crate_path() {
        insta::assert_snapshot!(format(&derive::<Projection>(quote! {
            #[es(crate = "my_app::es", handles(AccountEvent::Opened), nmae = "accounts")]
            struct Accounts;
        })));
    }
}
