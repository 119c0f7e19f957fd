//! Checks of a parsed model as a whole: what no single attribute shows.

use std::collections::{BTreeMap, HashMap};

use quote::ToTokens;

use crate::errors::Errors;
use crate::parse::{AggregateStruct, EventEnum, EventVariant, ProjectionStruct, Spanned, Step};

/// The longest stored event type, in bytes (the stores' default limit).
const MAX_NAME_BYTES: usize = 255;

/// Checks names, aliases, versions and upcast chains of an event enum.
pub(crate) fn event_enum(model: &EventEnum, errors: &mut Errors) {
    // Stored name -> (variant, whether it is an alias).
    let mut names: HashMap<&str, (&syn::Ident, bool)> = HashMap::new();
    let mut payloads: HashMap<String, &syn::Ident> = HashMap::new();
    // Only es-core's own `SystemEvent` names the store's `$` events.
    let system = model.krate.is_ident("crate");
    for variant in &model.variants {
        check_name(&variant.name, "event name", system, errors);
        claim_name(&mut names, &variant.name, variant, false, errors);
        for alias in &variant.aliases {
            check_name(alias, "alias", system, errors);
            claim_name(&mut names, alias, variant, true, errors);
        }
        let payload = variant.payload.to_token_stream().to_string();
        if let Some(first) = payloads.get(payload.as_str()) {
            errors.push(syn::Error::new_spanned(
                &variant.payload,
                format!(
                    "variant `{first}` already wraps `{payload}`; each variant needs its own payload type, since an aggregate's handler is chosen by it"
                ),
            ));
        } else {
            payloads.insert(payload, &variant.ident);
        }
        check_versions(variant, errors);
    }
}

fn check_name(name: &Spanned<String>, what: &str, system: bool, errors: &mut Errors) {
    let problem = if name.value.is_empty() {
        Some(format!("{what} is empty"))
    } else if name.value.starts_with('$') && !system {
        Some(format!(
            "{what} starts with `$`, which is reserved for the store's own events \
             (see `es_core::system::SystemEvent`)"
        ))
    } else if name.value.len() > MAX_NAME_BYTES {
        Some(format!("{what} is longer than {MAX_NAME_BYTES} bytes"))
    } else if name.value.chars().any(char::is_control) {
        Some(format!("{what} contains a control character"))
    } else {
        None
    };
    if let Some(problem) = problem {
        errors.push(syn::Error::new(name.span, problem));
    }
}

fn claim_name<'a>(
    names: &mut HashMap<&'a str, (&'a syn::Ident, bool)>,
    name: &'a Spanned<String>,
    variant: &'a EventVariant,
    alias: bool,
    errors: &mut Errors,
) {
    let Some(&(owner, owner_alias)) = names.get(name.value.as_str()) else {
        names.insert(&name.value, (&variant.ident, alias));
        return;
    };
    let message = match (alias, owner_alias) {
        (false, false) => format!(
            "duplicate event name `{}`: variant `{owner}` already has it",
            name.value
        ),
        (false, true) => format!(
            "event name `{}` clashes with an alias of variant `{owner}`",
            name.value
        ),
        (true, false) => format!(
            "alias `{}` clashes with the event name of variant `{owner}`",
            name.value
        ),
        (true, true) => format!(
            "duplicate alias `{}`: variant `{owner}` already has it",
            name.value
        ),
    };
    errors.push(syn::Error::new(name.span, message));
}

/// Every version below the current one needs exactly one upcast step, and a
/// typed step must be followed by typed steps up to the current version
/// (it converts into the next version's type).
fn check_versions(variant: &EventVariant, errors: &mut Errors) {
    let current = variant.version.value;
    if current == 0 {
        errors.push(syn::Error::new(
            variant.version.span,
            "schema versions start at 1",
        ));
        return;
    }
    let mut steps = BTreeMap::new();
    for upcast in &variant.upcasts {
        let from = upcast.from.value;
        if from == 0 {
            errors.push(syn::Error::new(
                upcast.from.span,
                "schema versions start at 1",
            ));
        } else if from >= current {
            errors.push(syn::Error::new(
                upcast.from.span,
                format!(
                    "upcast from version {from} is not older than the current version {current} of `{}`; raise `version` or remove the upcast",
                    variant.name.value
                ),
            ));
        } else if steps.insert(from, upcast).is_some() {
            errors.push(syn::Error::new(
                upcast.from.span,
                format!("repeated upcast from version {from}"),
            ));
        }
    }
    // Counted, not listed: a version may be as large as `u32::MAX`.
    let missing_count = u64::from(current - 1) - steps.len() as u64;
    if missing_count > 0 {
        let shown: Vec<String> = (1..current)
            .filter(|v| !steps.contains_key(v))
            .take(5)
            .map(|v| v.to_string())
            .collect();
        let more = match missing_count - shown.len() as u64 {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let plural = if missing_count == 1 { "" } else { "s" };
        let first = shown.first().map_or("1", String::as_str);
        errors.push(syn::Error::new(
            variant.version.span,
            format!(
                "missing upcast from version{plural} {}{more} of `{}` to the current version {current}; add `upcast(from = {first}, with = function)` or `upcast(from = {first}, type = OlderPayload)`",
                shown.join(", "),
                variant.name.value,
            ),
        ));
    }
    let mut typed_before: Option<u32> = None;
    for (from, upcast) in &steps {
        match (&upcast.step, typed_before) {
            (Step::Typed(_), _) => typed_before = Some(*from),
            (Step::Json(path), Some(typed)) => errors.push(syn::Error::new_spanned(
                path,
                format!(
                    "a JSON upcast cannot follow the typed upcast from version {typed}, which converts into the payload type of version {from}; make this upcast typed too"
                ),
            )),
            (Step::Json(_), None) => {}
        }
    }
}

/// Checks the aggregate's category and snapshot settings.
pub(crate) fn aggregate_struct(model: &AggregateStruct, errors: &mut Errors) {
    let category = &model.category;
    if category.value.is_empty() {
        errors.push(syn::Error::new(category.span, "category is empty"));
    } else if category.value.contains('-') {
        errors.push(syn::Error::new(
            category.span,
            "category cannot contain `-`: it separates the category from the id in a stream id",
        ));
    } else if category.value.chars().any(char::is_control) {
        errors.push(syn::Error::new(
            category.span,
            "category contains a control character",
        ));
    }
    if let Some(snapshot) = &model.snapshot {
        if snapshot.every.value == 0 {
            errors.push(syn::Error::new(
                snapshot.every.span,
                "snapshot `every` must be at least 1",
            ));
        }
        if snapshot.version.value == 0 {
            errors.push(syn::Error::new(
                snapshot.version.span,
                "snapshot versions start at 1",
            ));
        }
    }
}

/// Checks the projection's name, version and list of handled events.
pub(crate) fn projection_struct(model: &ProjectionStruct, errors: &mut Errors) {
    if let Some(version) = &model.version
        && version.value == 0
    {
        errors.push(syn::Error::new(
            version.span,
            "projection versions start at 1",
        ));
    }
    let name = &model.name;
    if name.value.is_empty() {
        errors.push(syn::Error::new(name.span, "projection name is empty"));
    } else if name.value.len() > MAX_NAME_BYTES {
        errors.push(syn::Error::new(
            name.span,
            format!("projection name is longer than {MAX_NAME_BYTES} bytes"),
        ));
    } else if name.value.chars().any(char::is_control) {
        errors.push(syn::Error::new(
            name.span,
            "projection name contains a control character",
        ));
    } else if name.value.contains('@') {
        errors.push(syn::Error::new(
            name.span,
            "projection name contains `@`, which keys the runs of its later versions (`name@v2`)",
        ));
    }
    if model.handles_span.is_none() {
        errors.push(syn::Error::new_spanned(
            &model.ident,
            "missing `#[es(handles(EventEnum::Variant, ...))]`: the events the projection reads",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for handled in &model.handles {
        let text = handled.path.to_token_stream().to_string().replace(' ', "");
        if !seen.insert(text.clone()) {
            errors.push(syn::Error::new_spanned(
                &handled.path,
                format!("`{text}` is listed twice"),
            ));
        }
    }
}
