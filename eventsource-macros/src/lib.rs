//! `#[derive(DomainEvent)]`, re-exported by `eventsource-core` (default
//! feature `derive`); see the trait's documentation there.
//!
//! ```ignore
//! #[derive(Serialize, Deserialize, DomainEvent)]
//! #[event(aggregate = "Account", version = 2)]
//! #[serde(tag = "type")]
//! enum AccountEvent {
//!     Opened { holder: String },            // event type "Opened"
//!     #[event(rename = "FundsDeposited")]
//!     Deposited { amount: u64 },            // event type "FundsDeposited"
//! }
//! ```
//!
//! Container attributes: `aggregate = "..."` (required), `version = N`
//! (schema version, default 1), `rename = "..."` (a struct's event type;
//! default: its name), `crate = "path"` (where `DomainEvent` lives; default
//! `::eventsource_core`, or `::eventsource` when derived through the
//! facade, which re-exports `DomainEventThroughFacade` as its
//! `DomainEvent`). Variant attribute: `rename = "..."`.
//!
//! Field attributes (personal data, see `eventsource_core::personal`):
//! `#[personal_data]` (optionally `#[personal_data(replacement = "…")]`,
//! a string the field reads as once forgotten; default: the type's
//! `Default`) and `#[data_subject]` (the field naming whose data it is;
//! its `to_string()`), one per struct or variant that has personal
//! fields. `#[personal_data]` on a struct makes the whole payload
//! personal (it reads as the struct's `Default` once forgotten); its
//! fields then carry only the `#[data_subject]`.

mod personal;

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitInt, LitStr};

/// Implements `DomainEvent` for an enum (one event type per variant) or a
/// struct (one event type).
#[proc_macro_derive(DomainEvent, attributes(event, personal_data, data_subject))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input, syn::parse_quote!(::eventsource_core)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The same derive as re-exported by the `eventsource` facade (package
/// `eventsource-kit`), as `eventsource::DomainEvent`: its code names the
/// trait through the facade (`::eventsource`), so an application that
/// depends on the facade alone needs no `crate = "…"`.
#[doc(hidden)]
#[proc_macro_derive(
    DomainEventThroughFacade,
    attributes(event, personal_data, data_subject)
)]
pub fn derive_domain_event_through_facade(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input, syn::parse_quote!(::eventsource)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Container {
    aggregate: Option<LitStr>,
    version: Option<LitInt>,
    rename: Option<LitStr>,
    krate: Option<syn::Path>,
}

fn container(input: &DeriveInput) -> syn::Result<Container> {
    let mut c = Container::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("aggregate") {
                c.aggregate = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("version") {
                c.version = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("rename") {
                c.rename = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("crate") {
                let path: LitStr = meta.value()?.parse()?;
                c.krate = Some(path.parse()?);
            } else {
                return Err(meta.error(
                    "unknown `event` attribute: expected aggregate, version, rename or crate",
                ));
            }
            Ok(())
        })?;
    }
    Ok(c)
}

fn variant_rename(attrs: &[syn::Attribute]) -> syn::Result<Option<LitStr>> {
    let mut rename = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                rename = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown `event` attribute on a variant: expected rename"))
            }
        })?;
    }
    Ok(rename)
}

fn expand(input: &DeriveInput, default_crate: syn::Path) -> syn::Result<proc_macro2::TokenStream> {
    let c = container(input)?;
    let name = &input.ident;
    let aggregate = c.aggregate.ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            "#[derive(DomainEvent)] needs #[event(aggregate = \"...\")]: the aggregate type that records it",
        )
    })?;
    let version = match c.version {
        Some(v) => {
            let n: u32 = v.base10_parse()?;
            if n == 0 {
                return Err(syn::Error::new(v.span(), "schema versions start at 1"));
            }
            quote!(#n)
        }
        None => quote!(1u32),
    };
    let krate = c.krate.unwrap_or(default_crate);
    let personal_data = personal::expand(input, &krate)?;
    let mut types: Vec<String> = Vec::new();
    let event_type = match &input.data {
        Data::Enum(data) => {
            if data.variants.is_empty() {
                return Err(syn::Error::new_spanned(
                    name,
                    "an event enum needs at least one variant",
                ));
            }
            if let Some(r) = &c.rename {
                return Err(syn::Error::new(
                    r.span(),
                    "`rename` on an enum: put it on the variants",
                ));
            }
            let arms = data
                .variants
                .iter()
                .map(|v| {
                    let ident = &v.ident;
                    let ty = match variant_rename(&v.attrs)? {
                        Some(r) => r.value(),
                        None => ident.to_string(),
                    };
                    check_type(&ty, v.ident.span())?;
                    types.push(ty.clone());
                    let pattern = match &v.fields {
                        Fields::Named(_) => quote!(Self::#ident { .. }),
                        Fields::Unnamed(_) => quote!(Self::#ident(..)),
                        Fields::Unit => quote!(Self::#ident),
                    };
                    Ok(quote!(#pattern => #ty))
                })
                .collect::<syn::Result<Vec<_>>>()?;
            quote!(match self { #(#arms,)* })
        }
        Data::Struct(_) => {
            let ty = match &c.rename {
                Some(r) => r.value(),
                None => name.to_string(),
            };
            check_type(&ty, name.span())?;
            types.push(ty.clone());
            quote!(#ty)
        }
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                name,
                "#[derive(DomainEvent)] works on enums and structs",
            ))
        }
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics #krate::DomainEvent for #name #ty_generics #where_clause {
            const AGGREGATE_TYPE: &'static str = #aggregate;
            const SCHEMA_VERSION: u32 = #version;
            fn event_type(&self) -> &str {
                #event_type
            }
            fn schema_version(&self) -> u32 {
                #version
            }
            fn event_types() -> &'static [&'static str] {
                &[#(#types),*]
            }
            #personal_data
        }
    })
}

/// Event types form routing keys `{aggregate}.{event}`: no dots, not empty.
fn check_type(ty: &str, span: Span) -> syn::Result<()> {
    if ty.is_empty() || ty.contains('.') || ty.contains(char::is_whitespace) {
        return Err(syn::Error::new(
            span,
            format!("event type `{ty}` must be a non-empty word without `.` or spaces"),
        ));
    }
    Ok(())
}
