//! Reading a derive's input and its `#[es(...)]` attributes into a model
//! that keeps the original tokens for spans.

use proc_macro2::{Span, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, LitInt, LitStr, Path, Type};

use crate::errors::Errors;

/// A text setting and where it was written.
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// `#[derive(Event)]` on an enum.
pub(crate) struct EventEnum {
    pub(crate) ident: Ident,
    pub(crate) krate: Path,
    pub(crate) variants: Vec<EventVariant>,
}

/// One variant: one event type.
pub(crate) struct EventVariant {
    pub(crate) ident: Ident,
    pub(crate) payload: Type,
    /// The stored name: `name = "..."` or the variant's name.
    pub(crate) name: Spanned<String>,
    pub(crate) aliases: Vec<Spanned<String>>,
    /// The current schema version: `version = N`, default 1.
    pub(crate) version: Spanned<u32>,
    pub(crate) upcasts: Vec<Upcast>,
}

/// `upcast(from = N, with = path)` or `upcast(from = N, type = Type)`.
pub(crate) struct Upcast {
    pub(crate) from: Spanned<u32>,
    pub(crate) step: Step,
}

/// How one upcast step goes from its version to the next.
pub(crate) enum Step {
    /// A function from `serde_json::Value` to `Result<Value, E>`.
    Json(Path),
    /// The payload type of the older version, with `From` into the next.
    Typed(Type),
}

/// `#[derive(Aggregate)]` on a struct.
pub(crate) struct AggregateStruct {
    pub(crate) ident: Ident,
    pub(crate) krate: Path,
    pub(crate) category: Spanned<String>,
    pub(crate) event: Type,
    pub(crate) snapshot: Option<SnapshotSettings>,
}

/// `snapshot(every = N, version = V)`.
pub(crate) struct SnapshotSettings {
    /// The `snapshot` keyword, for errors about the state's serde bounds.
    pub(crate) span: Span,
    pub(crate) every: Spanned<u64>,
    pub(crate) version: Spanned<u32>,
}

/// `#[derive(Projection)]` on a struct.
pub(crate) struct ProjectionStruct {
    pub(crate) ident: Ident,
    pub(crate) krate: Path,
    /// `name = "..."`, or the struct's name in snake case.
    pub(crate) name: Spanned<String>,
    /// `version = N`, the read model's version; `None`: the default, 1.
    pub(crate) version: Option<Spanned<u32>>,
    /// `handles(Enum::Variant, ...)`, in order.
    pub(crate) handles: Vec<Handled>,
    /// Where the first `handles` list was written; `None` without one.
    pub(crate) handles_span: Option<Span>,
}

/// One handled event: `Enum::Variant`.
pub(crate) struct Handled {
    /// The event enum's path.
    pub(crate) event: Path,
    pub(crate) variant: Ident,
    /// The whole `Enum::Variant` path, for errors.
    pub(crate) path: Path,
}

/// Reads `#[derive(Event)]`'s input. Errors are collected in `errors`; the
/// model is returned as far as it could be read.
pub(crate) fn event_enum(input: &DeriveInput, errors: &mut Errors) -> Option<EventEnum> {
    let mut krate = None;
    let complete = for_each_setting(&input.attrs, errors, |meta, errors| {
        if meta.path.is_ident("crate") {
            let path = parse_crate_path(&meta)?;
            set_once(&mut krate, path, &meta, errors);
            Ok(())
        } else {
            unknown_key(&meta, errors)
        }
    });
    reject_generics(input, "event enums", errors);
    let variants = match &input.data {
        Data::Enum(data) => data
            .variants
            .iter()
            .filter_map(|variant| event_variant(variant, errors))
            .collect(),
        Data::Struct(data) => {
            errors.push(syn::Error::new_spanned(
                data.struct_token,
                "`Event` can only be derived for enums: each variant is one event type",
            ));
            Vec::new()
        }
        Data::Union(data) => {
            errors.push(syn::Error::new_spanned(
                data.union_token,
                "`Event` can only be derived for enums: each variant is one event type",
            ));
            Vec::new()
        }
    };
    Some(EventEnum {
        ident: input.ident.clone(),
        krate: crate_path(krate, complete, &input.attrs)?,
        variants,
    })
}

fn event_variant(variant: &syn::Variant, errors: &mut Errors) -> Option<EventVariant> {
    let mut name = None;
    let mut aliases = Vec::new();
    let mut version = None;
    let mut upcasts = Vec::new();
    for_each_setting(&variant.attrs, errors, |meta, errors| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            set_once(&mut name, spanned_str(&lit), &meta, errors);
        } else if meta.path.is_ident("alias") {
            // Repeatable: a type renamed twice has two old names.
            let lit: LitStr = meta.value()?.parse()?;
            aliases.push(spanned_str(&lit));
        } else if meta.path.is_ident("version") {
            let lit: LitInt = meta.value()?.parse()?;
            let value = spanned_int(&lit)?;
            set_once(&mut version, value, &meta, errors);
        } else if meta.path.is_ident("upcast") {
            if let Some(upcast) = parse_upcast(&meta, errors)? {
                upcasts.push(upcast);
            }
        } else {
            unknown_key(&meta, errors)?;
        }
        Ok(())
    });
    let payload = match &variant.fields {
        Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            fields.unnamed.first().map(|field| field.ty.clone())
        }
        Fields::Unit => {
            errors.push(syn::Error::new_spanned(
                &variant.ident,
                format!(
                    "event variant `{0}` must wrap one payload type, as in `{0}({0})`",
                    variant.ident
                ),
            ));
            None
        }
        fields => {
            errors.push(syn::Error::new_spanned(
                fields,
                format!(
                    "event variant `{0}` must wrap exactly one payload type, as in `{0}({0})`",
                    variant.ident
                ),
            ));
            None
        }
    }?;
    Some(EventVariant {
        ident: variant.ident.clone(),
        payload,
        name: name.unwrap_or_else(|| Spanned {
            value: variant.ident.to_string(),
            span: variant.ident.span(),
        }),
        aliases,
        version: version.unwrap_or(Spanned {
            value: 1,
            span: variant.ident.span(),
        }),
        upcasts,
    })
}

fn parse_upcast(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<Upcast>> {
    let mut from = None;
    let mut step: Option<Spanned<Step>> = None;
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("from") {
            let lit: LitInt = inner.value()?.parse()?;
            let value = spanned_int(&lit)?;
            set_once(&mut from, value, &inner, errors);
        } else if inner.path.is_ident("with") || inner.path.is_ident("type") {
            let parsed = if inner.path.is_ident("with") {
                Step::Json(inner.value()?.parse()?)
            } else {
                Step::Typed(inner.value()?.parse()?)
            };
            if step.is_some() {
                errors.push(syn::Error::new(
                    path_span(&inner.path),
                    "an upcast has one step: either `with = function` or `type = OlderPayload`",
                ));
            } else {
                step = Some(Spanned {
                    value: parsed,
                    span: path_span(&inner.path),
                });
            }
        } else {
            unknown_key(&inner, errors)?;
        }
        Ok(())
    })?;
    let keyword = path_span(&meta.path);
    let Some(from) = from else {
        errors.push(syn::Error::new(
            keyword,
            "`upcast` needs `from = N`, the schema version it upcasts from",
        ));
        return Ok(None);
    };
    let Some(step) = step else {
        errors.push(syn::Error::new(
            keyword,
            "`upcast` needs `with = function` (a JSON upcast) or `type = OlderPayload` (a typed one)",
        ));
        return Ok(None);
    };
    Ok(Some(Upcast {
        from,
        step: step.value,
    }))
}

/// Reads `#[derive(Aggregate)]`'s input.
pub(crate) fn aggregate_struct(
    input: &DeriveInput,
    errors: &mut Errors,
) -> Option<AggregateStruct> {
    let mut krate = None;
    let mut category = None;
    let mut event = None;
    let mut snapshot = None;
    let complete = for_each_setting(&input.attrs, errors, |meta, errors| {
        if meta.path.is_ident("crate") {
            let path = parse_crate_path(&meta)?;
            set_once(&mut krate, path, &meta, errors);
        } else if meta.path.is_ident("category") {
            let lit: LitStr = meta.value()?.parse()?;
            set_once(&mut category, spanned_str(&lit), &meta, errors);
        } else if meta.path.is_ident("event") {
            let ty: Type = meta.value()?.parse()?;
            set_once(&mut event, ty, &meta, errors);
        } else if meta.path.is_ident("snapshot") {
            if let Some(settings) = parse_snapshot(&meta, errors)? {
                set_once(&mut snapshot, settings, &meta, errors);
            }
        } else {
            unknown_key(&meta, errors)?;
        }
        Ok(())
    });
    reject_generics(input, "aggregates", errors);
    require_struct(input, "Aggregate", errors);
    let Some(event) = event else {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            "missing `#[es(event = ...)]`: the aggregate's event enum",
        ));
        return None;
    };
    Some(AggregateStruct {
        ident: input.ident.clone(),
        krate: crate_path(krate, complete, &input.attrs)?,
        category: category.unwrap_or_else(|| Spanned {
            value: input.ident.to_string(),
            span: input.ident.span(),
        }),
        event,
        snapshot,
    })
}

fn parse_snapshot(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<SnapshotSettings>> {
    let mut every = None;
    let mut version = None;
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("every") {
            let lit: LitInt = inner.value()?.parse()?;
            let value = spanned_int(&lit)?;
            set_once(&mut every, value, &inner, errors);
        } else if inner.path.is_ident("version") {
            let lit: LitInt = inner.value()?.parse()?;
            let value = spanned_int(&lit)?;
            set_once(&mut version, value, &inner, errors);
        } else {
            unknown_key(&inner, errors)?;
        }
        Ok(())
    })?;
    let span = path_span(&meta.path);
    let Some(every) = every else {
        errors.push(syn::Error::new(
            span,
            "`snapshot` needs `every = N`: a snapshot is taken every N events",
        ));
        return Ok(None);
    };
    Ok(Some(SnapshotSettings {
        span,
        every,
        version: version.unwrap_or(Spanned { value: 1, span }),
    }))
}

/// Runs `f` on each key of each `#[es(...)]` attribute, collecting errors.
/// Returns whether every attribute was read to its end: an error that `f`
/// returns, or malformed syntax, leaves the keys after it unread.
fn for_each_setting(
    attrs: &[Attribute],
    errors: &mut Errors,
    mut f: impl FnMut(ParseNestedMeta<'_>, &mut Errors) -> syn::Result<()>,
) -> bool {
    let mut complete = true;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("es")) {
        let mut found = Errors::default();
        let parsed = attr.parse_nested_meta(|meta| f(meta, &mut found));
        errors.record(found.finish());
        complete &= errors.record(parsed).is_some();
    }
    complete
}

/// Records `value` in `slot`, or an error if the key was already given.
fn set_once<T>(slot: &mut Option<T>, value: T, meta: &ParseNestedMeta<'_>, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(syn::Error::new(
            path_span(&meta.path),
            format!("repeated es attribute `{}`", path_text(&meta.path)),
        ));
    } else {
        *slot = Some(value);
    }
}

/// Records an unknown key and skips its value, so the keys after it are
/// still checked.
fn unknown_key(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<()> {
    errors.push(syn::Error::new(
        path_span(&meta.path),
        format!("unknown es attribute `{}`", path_text(&meta.path)),
    ));
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            // Skip nested values without judging them.
            if inner.input.peek(syn::Token![=]) {
                inner.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn reject_generics(input: &DeriveInput, what: &str, errors: &mut Errors) {
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            format!("{what} cannot be generic"),
        ));
    }
}

fn parse_crate_path(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
    let lit: LitStr = meta.value()?.parse()?;
    lit.parse::<Path>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("`{}` is not a path to the es-core crate", lit.value()),
        )
    })
}

/// Records an error unless `input` is a struct. The model is still read, so
/// that the derive's other errors are reported and its fallback emitted.
fn require_struct(input: &DeriveInput, derive: &str, errors: &mut Errors) {
    let token = match &input.data {
        Data::Struct(_) => return,
        Data::Enum(data) => data.enum_token.span,
        Data::Union(data) => data.union_token.span,
    };
    errors.push(syn::Error::new(
        token,
        format!("`{derive}` can only be derived for structs"),
    ));
}

/// The path of es-core: the one given with `crate = "path"`, else
/// `::es_core`. `None` when a `crate` key was left unread because reading
/// stopped at an error (`complete` is false): the path the user meant is
/// then unknown, and a fallback that named another one could fail to
/// resolve.
fn crate_path(given: Option<Path>, complete: bool, attrs: &[Attribute]) -> Option<Path> {
    let unread = !complete
        && attrs
            .iter()
            .filter(|attr| attr.path().is_ident("es"))
            .any(has_crate_key);
    match given {
        Some(path) => Some(path),
        None if unread => None,
        None => Some(syn::parse_quote!(::es_core)),
    }
}

/// Whether `attr` has a `crate` key, read or not: `crate` where a key
/// starts (first, or after a comma), not as the start of a path in a value.
fn has_crate_key(attr: &Attribute) -> bool {
    let syn::Meta::List(list) = &attr.meta else {
        return false;
    };
    let mut at_key = true;
    list.tokens.clone().into_iter().any(|token| {
        let is_crate = at_key && matches!(&token, TokenTree::Ident(ident) if ident == "crate");
        at_key = matches!(&token, TokenTree::Punct(punct) if punct.as_char() == ',');
        is_crate
    })
}

fn spanned_str(lit: &LitStr) -> Spanned<String> {
    Spanned {
        value: lit.value(),
        span: lit.span(),
    }
}

fn spanned_int<N>(lit: &LitInt) -> syn::Result<Spanned<N>>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    Ok(Spanned {
        value: lit.base10_parse()?,
        span: lit.span(),
    })
}

fn path_text(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// The span of a whole path (its first token when spans cannot be joined).
fn path_span(path: &Path) -> Span {
    let mut tokens = path.to_token_stream().into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    tokens
        .last()
        .and_then(|last| first.join(last.span()))
        .unwrap_or(first)
}

/// Reads `#[derive(Projection)]`'s input.
pub(crate) fn projection_struct(
    input: &DeriveInput,
    errors: &mut Errors,
) -> Option<ProjectionStruct> {
    let mut krate = None;
    let mut name = None;
    let mut version = None;
    let mut handles = Vec::new();
    let mut handles_span = None;
    let complete = for_each_setting(&input.attrs, errors, |meta, errors| {
        if meta.path.is_ident("crate") {
            let path = parse_crate_path(&meta)?;
            set_once(&mut krate, path, &meta, errors);
        } else if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            set_once(&mut name, spanned_str(&lit), &meta, errors);
        } else if meta.path.is_ident("version") {
            let lit: LitInt = meta.value()?.parse()?;
            let value = spanned_int(&lit)?;
            set_once(&mut version, value, &meta, errors);
        } else if meta.path.is_ident("handles") {
            // Repeatable: a long list may be split over several attributes.
            handles_span.get_or_insert_with(|| path_span(&meta.path));
            meta.parse_nested_meta(|inner| {
                let path = inner.path.clone();
                if inner.input.peek(syn::Token![=]) || inner.input.peek(syn::token::Paren) {
                    return Err(
                        inner.error("expected an event as `EventEnum::Variant`, with no value")
                    );
                }
                let mut event = path.clone();
                let last = event.segments.pop();
                match last {
                    Some(variant) if !event.segments.is_empty() => {
                        event.segments.pop_punct();
                        handles.push(Handled {
                            event,
                            variant: variant.into_value().ident,
                            path,
                        });
                    }
                    _ => errors.push(syn::Error::new(
                        path_span(&path),
                        format!(
                            "expected an event as `EventEnum::Variant`, found `{}`",
                            path_text(&path)
                        ),
                    )),
                }
                Ok(())
            })?;
        } else {
            unknown_key(&meta, errors)?;
        }
        Ok(())
    });
    reject_generics(input, "projections", errors);
    require_struct(input, "Projection", errors);
    Some(ProjectionStruct {
        ident: input.ident.clone(),
        krate: crate_path(krate, complete, &input.attrs)?,
        name: name.unwrap_or_else(|| Spanned {
            value: snake_case(&input.ident.to_string()),
            span: input.ident.span(),
        }),
        version,
        handles,
        handles_span,
    })
}

/// `OrderSummaries` -> `order_summaries`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(ch.to_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}
