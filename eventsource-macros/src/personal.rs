//! `#[personal_data]` and `#[data_subject]`: the derive's
//! `DomainEvent::personal_data`.
//!
//! The pointer of each personal field is the field's name as serde writes
//! it: `#[serde(rename = "…")]` on the field, `rename_all` on the struct or
//! variant, `rename_all_fields` on the enum; inside an enum, the variant's
//! place per serde's representation (`tag` alone or `untagged`: at the
//! top; `tag` + `content`: under the content key; neither: under the
//! variant's name).

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Fields, LitStr};

/// serde's container or variant attributes that decide names.
#[derive(Default)]
struct Serde {
    rename: Option<String>,
    rename_all: Option<String>,
    rename_all_fields: Option<String>,
    tag: Option<String>,
    content: Option<String>,
    untagged: bool,
}

fn serde_attrs(attrs: &[Attribute]) -> syn::Result<Serde> {
    let mut s = Serde::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let string = |meta: &syn::meta::ParseNestedMeta<'_>| -> syn::Result<Option<String>> {
                // `rename = "x"` counts; `rename(serialize = "x")` is skipped.
                if meta.input.peek(syn::Token![=]) {
                    Ok(Some(meta.value()?.parse::<LitStr>()?.value()))
                } else {
                    skip(meta)?;
                    Ok(None)
                }
            };
            if meta.path.is_ident("rename") {
                s.rename = string(&meta)?;
            } else if meta.path.is_ident("rename_all") {
                s.rename_all = string(&meta)?;
            } else if meta.path.is_ident("rename_all_fields") {
                s.rename_all_fields = string(&meta)?;
            } else if meta.path.is_ident("tag") {
                s.tag = string(&meta)?;
            } else if meta.path.is_ident("content") {
                s.content = string(&meta)?;
            } else if meta.path.is_ident("untagged") {
                s.untagged = true;
            } else {
                skip(&meta)?;
            }
            Ok(())
        })?;
    }
    Ok(s)
}

/// Consumes whatever follows a serde attribute we do not read.
fn skip(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
        _content.parse::<TokenStream>()?;
    }
    Ok(())
}

/// serde's `rename_all` on a field name (snake_case in Rust).
fn rename_field(name: &str, rule: Option<&str>) -> syn::Result<String> {
    let pascal = || {
        name.split('_')
            .map(|part| {
                let mut c = part.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    };
    Ok(match rule {
        None | Some("lowercase") | Some("snake_case") => name.to_owned(),
        Some("UPPERCASE") | Some("SCREAMING_SNAKE_CASE") => name.to_ascii_uppercase(),
        Some("PascalCase") => pascal(),
        Some("camelCase") => {
            let p = pascal();
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
        Some("kebab-case") => name.replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => name.replace('_', "-").to_ascii_uppercase(),
        Some(other) => return Err(unknown_rule(other)),
    })
}

/// serde's `rename_all` on a variant name (PascalCase in Rust).
fn rename_variant(name: &str, rule: Option<&str>) -> syn::Result<String> {
    let snake = || {
        let mut out = String::new();
        for (i, ch) in name.char_indices() {
            if i > 0 && ch.is_uppercase() {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        }
        out
    };
    Ok(match rule {
        None | Some("PascalCase") => name.to_owned(),
        Some("lowercase") => name.to_ascii_lowercase(),
        Some("UPPERCASE") => name.to_ascii_uppercase(),
        Some("camelCase") => {
            let mut c = name.chars();
            c.next()
                .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
        Some("snake_case") => snake(),
        Some("SCREAMING_SNAKE_CASE") => snake().to_ascii_uppercase(),
        Some("kebab-case") => snake().replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => snake().replace('_', "-").to_ascii_uppercase(),
        Some(other) => return Err(unknown_rule(other)),
    })
}

fn unknown_rule(rule: &str) -> syn::Error {
    syn::Error::new(
        proc_macro2::Span::call_site(),
        format!("#[derive(DomainEvent)] does not know serde's rename rule `{rule}`"),
    )
}

/// A JSON pointer token: `~` and `/` escaped (RFC 6901).
fn token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// What one field declares.
enum Mark {
    None,
    Personal(Option<LitStr>),
    Subject,
}

fn mark(field: &syn::Field) -> syn::Result<Mark> {
    let mut found = Mark::None;
    for attr in &field.attrs {
        if attr.path().is_ident("data_subject") {
            attr.meta.require_path_only()?;
            found = Mark::Subject;
        } else if attr.path().is_ident("personal_data") {
            let mut replacement = None;
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("replacement") {
                        replacement = Some(meta.value()?.parse()?);
                        Ok(())
                    } else {
                        Err(meta.error("expected `replacement = \"…\"`"))
                    }
                })?;
            }
            found = Mark::Personal(replacement);
        }
    }
    Ok(found)
}

/// The body of `fn personal_data(&self)` for the fields of one struct or
/// variant, or `None` when none is personal. `access(ident)` is how a
/// field is reached (`self.x` or a binding).
fn body(
    fields: &Fields,
    prefix: &str,
    rule: Option<&str>,
    krate: &syn::Path,
    access: &dyn Fn(&syn::Ident) -> TokenStream,
    owner: &dyn quote::ToTokens,
) -> syn::Result<Option<(TokenStream, Vec<syn::Ident>)>> {
    let mut subject = None;
    let mut personal = Vec::new();
    let mut used = Vec::new();
    for field in fields {
        let m = mark(field)?;
        if matches!(m, Mark::None) {
            continue;
        }
        let Some(ident) = &field.ident else {
            return Err(syn::Error::new_spanned(
                field,
                "#[personal_data] and #[data_subject] go on named fields",
            ));
        };
        let name = match serde_attrs(&field.attrs)?.rename {
            Some(r) => r,
            None => rename_field(ident.to_string().trim_start_matches("r#"), rule)?,
        };
        match m {
            Mark::Subject => {
                if subject.is_some() {
                    return Err(syn::Error::new_spanned(
                        field,
                        "one #[data_subject] per event",
                    ));
                }
                let value = access(ident);
                subject = Some(quote!(::std::string::ToString::to_string(&#value)));
                used.push(ident.clone());
            }
            Mark::Personal(replacement) => {
                let pointer = format!("{prefix}/{}", token(&name));
                let ty = &field.ty;
                let replacement = match replacement {
                    Some(r) => quote!(#krate::__private::string_json(#r)),
                    None => quote!(#krate::__private::default_json::<#ty>()),
                };
                personal.push(quote!(#krate::personal::PersonalField::new(#pointer, #replacement)));
            }
            Mark::None => {}
        }
    }
    if personal.is_empty() {
        if subject.is_some() {
            return Err(syn::Error::new_spanned(
                owner,
                "#[data_subject] without any #[personal_data] field",
            ));
        }
        return Ok(None);
    }
    let Some(subject) = subject else {
        return Err(syn::Error::new_spanned(
            owner,
            "#[personal_data] fields need a #[data_subject] field naming whose data they are",
        ));
    };
    Ok(Some((
        quote! {
            ::std::option::Option::Some(#krate::personal::PersonalData {
                subject: #subject,
                fields: ::std::vec![#(#personal),*],
            })
        },
        used,
    )))
}

/// `#[personal_data]` on a struct: the whole payload is personal (JSON
/// pointer `""`), read as the struct's `Default` once forgotten; a
/// `#[data_subject]` field names whose it is.
fn whole(input: &DeriveInput, attr: &Attribute, krate: &syn::Path) -> syn::Result<TokenStream> {
    if !matches!(attr.meta, syn::Meta::Path(_)) {
        return Err(syn::Error::new_spanned(
            attr,
            "#[personal_data] on a struct takes no replacement: a forgotten payload reads as \
             the struct's Default",
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            attr,
            "#[personal_data] on the whole payload goes on a struct; on an enum, mark the \
             fields of its variants",
        ));
    };
    let mut subject = None;
    for field in &data.fields {
        match mark(field)? {
            Mark::Subject => {
                let Some(ident) = &field.ident else {
                    return Err(syn::Error::new_spanned(
                        field,
                        "#[data_subject] goes on a named field",
                    ));
                };
                if subject.is_some() {
                    return Err(syn::Error::new_spanned(
                        field,
                        "one #[data_subject] per event",
                    ));
                }
                subject = Some(quote!(::std::string::ToString::to_string(&self.#ident)));
            }
            Mark::Personal(_) => {
                return Err(syn::Error::new_spanned(
                    field,
                    "the whole payload is personal already (#[personal_data] on the struct)",
                ))
            }
            Mark::None => {}
        }
    }
    let Some(subject) = subject else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[personal_data] on a struct needs a #[data_subject] field naming whose data it is",
        ));
    };
    Ok(method(
        krate,
        quote! {
            ::std::option::Option::Some(#krate::personal::PersonalData {
                subject: #subject,
                fields: ::std::vec![#krate::personal::PersonalField::new(
                    "",
                    #krate::__private::default_json::<Self>(),
                )],
            })
        },
    ))
}

/// `fn personal_data` for the derive, or nothing when no field is marked.
pub(crate) fn expand(input: &DeriveInput, krate: &syn::Path) -> syn::Result<TokenStream> {
    if let Some(attr) = input
        .attrs
        .iter()
        .find(|a| a.path().is_ident("personal_data"))
    {
        return whole(input, attr, krate);
    }
    let container = serde_attrs(&input.attrs)?;
    match &input.data {
        Data::Struct(data) => {
            let access = |ident: &syn::Ident| quote!(self.#ident);
            let Some((body, _)) = body(
                &data.fields,
                "",
                container.rename_all.as_deref(),
                krate,
                &access,
                &input.ident,
            )?
            else {
                return Ok(TokenStream::new());
            };
            Ok(method(krate, body))
        }
        Data::Enum(data) => {
            let mut arms = Vec::new();
            for v in &data.variants {
                let vs = serde_attrs(&v.attrs)?;
                let vident = &v.ident;
                let name = match vs.rename {
                    Some(r) => r,
                    None => rename_variant(&vident.to_string(), container.rename_all.as_deref())?,
                };
                let prefix = match (&container.tag, &container.content, container.untagged) {
                    (_, _, true) | (Some(_), None, _) => String::new(),
                    (Some(_), Some(content), _) => format!("/{}", token(content)),
                    (None, _, false) => format!("/{}", token(&name)),
                };
                let rule = vs
                    .rename_all
                    .as_deref()
                    .or(container.rename_all_fields.as_deref());
                let access = |ident: &syn::Ident| quote!(#ident);
                if let Some((body, used)) = body(&v.fields, &prefix, rule, krate, &access, v)? {
                    arms.push(quote!(Self::#vident { #(#used,)* .. } => #body));
                }
            }
            if arms.is_empty() {
                return Ok(TokenStream::new());
            }
            Ok(method(
                krate,
                quote! {
                    #[allow(unreachable_patterns)]
                    match self {
                        #(#arms,)*
                        _ => ::std::option::Option::None,
                    }
                },
            ))
        }
        Data::Union(_) => Ok(TokenStream::new()),
    }
}

fn method(krate: &syn::Path, body: TokenStream) -> TokenStream {
    quote! {
        fn personal_data(&self) -> ::std::option::Option<#krate::personal::PersonalData> {
            #body
        }
    }
}
