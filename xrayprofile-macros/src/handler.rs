//! The annotated item: an `async fn` whose first argument after `self`
//! carries the invocation. The body is never parsed: it is kept as tokens
//! and pasted back unchanged; only argument patterns are moved (see
//! [`Handler::from_item`]).

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{format_ident, quote};
use syn::parse::discouraged::Speculative;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, Ident, Pat, PatIdent, PatType, Signature, Visibility, braced};

use crate::diag::Diag;

/// A fn item with its body kept as tokens, as tracing-attributes'
/// `MaybeItemFn` keeps it: a half-typed body (in an editor) or syntax newer
/// than syn's reaches rustc unchanged and gets rustc's own error, not ours.
pub(crate) struct HandlerFn {
    /// Outer attributes, docs included, in order.
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    /// `#![...]` at the top of the body, moved to the top of the wrapper's.
    pub(crate) inner_attrs: Vec<Attribute>,
    /// `{ statements }`, unparsed, with the original braces' span.
    pub(crate) body: Group,
}

impl Parse for HandlerFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let content;
        let brace = braced!(content in input);
        // A malformed `#![...]` is part of the body too: it stays in the
        // tokens, for rustc to report.
        let attempt = content.fork();
        let inner_attrs = match attempt.call(Attribute::parse_inner) {
            Ok(attrs) => {
                content.advance_to(&attempt);
                attrs
            }
            Err(_) => Vec::new(),
        };
        let statements: TokenStream = content.parse()?;
        let mut body = Group::new(Delimiter::Brace, statements);
        body.set_span(brace.span.join());
        Ok(HandlerFn {
            attrs,
            vis,
            sig,
            inner_attrs,
            body,
        })
    }
}

/// What the expansion needs from the handler.
pub(crate) struct Handler {
    /// The function, with destructuring argument patterns replaced by hidden
    /// names.
    pub(crate) item: HandlerFn,
    /// The binding the wrapper reads the invocation from.
    pub(crate) invocation: Ident,
    /// `let <pattern> = <hidden name>;` for every replaced pattern, to run at
    /// the top of the body so the user's bindings exist exactly as written.
    pub(crate) rebinds: TokenStream,
}

impl Handler {
    /// Checks the handler's shape, recording each problem in `diag`.
    ///
    /// An argument written as a pattern (`LambdaEvent { payload, context }: T`,
    /// `(a, b): T`, `_: T`, `mut event: T`) cannot be named by the wrapper, so the signature
    /// gets a hidden name in its place and the pattern is bound from it inside
    /// the body. Callers see no difference: patterns are not part of a fn's type.
    pub(crate) fn from_item(mut item: HandlerFn, diag: &mut Diag) -> Option<Handler> {
        check_signature(&item, diag);
        let mut rebinds = TokenStream::new();
        let mut invocation = None;
        let mut has_receiver = false;
        for (index, arg) in item.sig.inputs.iter_mut().enumerate() {
            let PatType { pat, .. } = match arg {
                FnArg::Typed(typed) => typed,
                FnArg::Receiver(_) => {
                    has_receiver = true;
                    continue;
                }
            };
            let name = match &**pat {
                Pat::Ident(PatIdent {
                    ident,
                    by_ref: None,
                    subpat: None,
                    ..
                }) => ident.clone(),
                Pat::Wild(_) if invocation.is_some() => continue,
                _ => {
                    let hidden =
                        format_ident!("__xrayprofile_arg{}", index, span = Span::mixed_site());
                    let original = std::mem::replace(&mut **pat, hidden_pat(&hidden));
                    rebinds.extend(quote!(let #original = #hidden;));
                    hidden
                }
            };
            invocation.get_or_insert(name);
        }
        if invocation.is_none() {
            let which = if has_receiver {
                "first argument after `self`"
            } else {
                "first argument"
            };
            diag.error(
                &item.sig.ident,
                format!("`#[xrayprofile]` reads the invocation from the handler's {which}; add `event: LambdaEvent<T>`"),
            );
        }
        Some(Handler {
            invocation: invocation?,
            item,
            rebinds,
        })
    }
}

fn hidden_pat(ident: &Ident) -> Pat {
    Pat::Ident(PatIdent {
        attrs: Vec::new(),
        by_ref: None,
        mutability: None,
        ident: ident.clone(),
        subpat: None,
    })
}

fn check_signature(item: &HandlerFn, diag: &mut Diag) {
    let sig = &item.sig;
    if let Some(constness) = &sig.constness {
        diag.error(
            constness,
            "`#[xrayprofile]` cannot wrap a `const fn`; remove `const`",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        diag.error(unsafety, "`#[xrayprofile]` cannot wrap an `unsafe fn`; move the unsafe code into a function the handler calls");
    }
    if let Some(abi) = &sig.abi {
        diag.error(
            abi,
            "`#[xrayprofile]` cannot wrap an `extern` fn; remove the ABI",
        );
    }
    if let Some(variadic) = &sig.variadic {
        diag.error(variadic, "`#[xrayprofile]` cannot wrap a variadic fn");
    }
    if sig.asyncness.is_none() {
        diag.error(
            sig.fn_token,
            "`#[xrayprofile]` wraps async handlers only; write `async fn`",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> syn::Result<HandlerFn> {
        syn::parse_str(src)
    }

    #[test]
    fn the_body_is_kept_as_tokens_even_when_it_does_not_parse() {
        let item = parse("async fn h(e: E) -> R { let x = e.payload.; Ok(x) }").unwrap();
        assert_eq!(item.sig.ident, "h");
        assert!(item.inner_attrs.is_empty());
        let body = item.body.stream().to_string();
        assert!(body.contains("e . payload ."), "{body}");
    }

    #[test]
    fn inner_attributes_are_lifted_and_malformed_ones_stay_in_the_body() {
        let item = parse("async fn h(e: E) { #![allow(unused)] let _ = e; }").unwrap();
        assert_eq!(item.inner_attrs.len(), 1);
        assert!(!item.body.stream().to_string().contains("allow"));
        let item = parse("async fn h(e: E) { #![= 1] let _ = e; }").unwrap();
        assert!(item.inner_attrs.is_empty());
        assert!(item.body.stream().to_string().starts_with('#'));
    }

    #[test]
    fn an_item_that_is_not_a_fn_with_a_body_does_not_parse() {
        for src in ["struct Handler;", "async fn h(e: E);", "fn"] {
            assert!(parse(src).is_err(), "{src}");
        }
    }
}
