//! The only module that writes code. Every path it emits goes through
//! `::xrayprofile::__private`, so a user's own `Result`, `Option`, `Box`,
//! `core` or `std` cannot break the expansion.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::visit_mut::VisitMut;
use syn::{ReturnType, Type};

use xrayprofile_rules::Mode;

use crate::args::{Args, RawArgs};
use crate::diag::Diag;
use crate::handler::{Handler, HandlerFn};

/// Expands `#[xrayprofile(args)] item`. On any error the item comes back
/// unchanged beside the errors, so callers of the handler see no
/// "cannot find function" cascade.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut diag = Diag::default();
    let args = match syn::parse2::<RawArgs>(args) {
        Ok(raw) => Args::from_raw(raw, &mut diag),
        Err(err) => {
            diag.push(err);
            Args::default()
        }
    };
    let item_fn = match syn::parse2::<HandlerFn>(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(_) => {
            diag.push(syn::Error::new(
                first_token_span(&item),
                "`#[xrayprofile]` goes on an `async fn` Lambda handler, not on this item",
            ));
            return with_errors(item, diag);
        }
    };
    let handler = Handler::from_item(item_fn, &mut diag);
    match (handler, diag.finish()) {
        (Some(handler), None) => wrap(&args, handler),
        (_, errors) => {
            let errors = errors.unwrap_or_default();
            quote!(#errors #item)
        }
    }
}

fn first_token_span(item: &TokenStream) -> Span {
    item.clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

fn with_errors(item: TokenStream, diag: Diag) -> TokenStream {
    let errors = diag.finish().unwrap_or_default();
    quote!(#errors #item)
}

/// Input:
/// ```text
/// #[xrayprofile(threshold = 655)]
/// async fn handler(event: LambdaEvent<T>) -> Result<R, E> { body }
/// ```
/// Output:
/// ```text
/// async fn handler(event: LambdaEvent<T>) -> Result<R, E> {
///     static SITE: Site = Site {
///         threshold: Some(655), bucket: None, prefix: None,
///         max_per_minute: None, mode: None, symbolize: None,
///     };
///     let wrapper = Wrapper::begin(&SITE, &event);
///     wrapper.run(async move {
///         let <destructuring patterns> = <hidden args>;   // only if any
///         let ret: Result<R, E> = { body };
///         ret
///     }).await
/// }
/// ```
fn wrap(args: &Args, handler: Handler) -> TokenStream {
    let Handler {
        item,
        invocation,
        rebinds,
    } = handler;
    let HandlerFn {
        attrs,
        vis,
        sig,
        inner_attrs,
        body,
    } = item;

    let private = quote!(::xrayprofile::__private);
    let option = |value: Option<TokenStream>| match value {
        Some(v) => quote!(#private::Option::Some(#v)),
        None => quote!(#private::Option::None),
    };
    let threshold = option(args.threshold.map(|(v, span)| quote_spanned!(span=> #v)));
    let bucket = option(args.bucket.as_ref().map(|b| quote!(#b)));
    let prefix = option(args.prefix.as_ref().map(|p| quote!(#p)));
    let max_per_minute = option(
        args.max_per_minute
            .map(|(v, span)| quote_spanned!(span=> #v)),
    );
    let mode = option(args.mode.map(|(mode, span)| match mode {
        Mode::Wall => quote_spanned!(span=> #private::Mode::Wall),
        Mode::Cpu => quote_spanned!(span=> #private::Mode::Cpu),
    }));
    let symbolize = option(args.symbolize.map(|(v, span)| quote_spanned!(span=> #v)));

    let site = quote_spanned!(Span::mixed_site()=> __XRAYPROFILE_SITE);
    let wrapper = quote_spanned!(Span::mixed_site()=> __xrayprofile_wrapper);
    let ret = quote_spanned!(Span::mixed_site()=> __xrayprofile_ret);
    // Spanned at the argument, so a type that carries no invocation is
    // reported there with the trait's `on_unimplemented` message.
    let begin = quote_spanned!(invocation.span()=> #private::Wrapper::begin(&#site, &#invocation));
    // Spanned at the declared return type, so a body of the wrong type is
    // reported against the signature the user wrote. `impl Trait` cannot be
    // a `let` type, so it becomes `_` there (the fn's signature keeps it).
    let (ret_decl, ret_span) = match &sig.output {
        ReturnType::Type(_, ty) => {
            let mut ty = (**ty).clone();
            EraseImplTrait.visit_type_mut(&mut ty);
            let span = syn::spanned::Spanned::span(&ty);
            (quote_spanned!(span=> let #ret: #ty = #body;), span)
        }
        ReturnType::Default => (quote!(let #ret: () = #body;), sig.ident.span()),
    };
    // Spanned at the return type too: `run` requires a `Result`, and a
    // handler returning something else is told so at its return type.
    let run = quote_spanned!(ret_span=> ::xrayprofile::__private::Wrapper::run);

    quote! {
        #(#attrs)*
        #vis #sig {
            #(#inner_attrs)*
            static #site: #private::Site = #private::Site {
                threshold: #threshold,
                bucket: #bucket,
                prefix: #prefix,
                max_per_minute: #max_per_minute,
                mode: #mode,
                symbolize: #symbolize,
            };
            let #wrapper = #begin;
            #run(#wrapper, async move {
                #rebinds
                #ret_decl
                #ret
            }).await
        }
    }
}

struct EraseImplTrait;

impl VisitMut for EraseImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(impl_trait) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: syn::Token![_](syn::spanned::Spanned::span(impl_trait)),
            });
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}
