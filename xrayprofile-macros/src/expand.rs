//! The only module that writes code. Every path it emits goes through
//! `::xrayprofile::__private` or `::core`, so a user's own `Result`, `Option`
//! or `Box` cannot break the expansion.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{AttrStyle, ItemFn, ReturnType};

use crate::args::{Args, RawArgs};
use crate::diag::Diag;
use crate::handler::Handler;

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
    let item_fn = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(_) => {
            diag.error(
                &item,
                "`#[xrayprofile]` goes on an `async fn` Lambda handler",
            );
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
///     static SITE: Site = Site::new(Some(655), None, None, None);
///     let wrapper = Wrapper::begin(&SITE, &event);
///     wrapper.run(async move {
///         let ret: Result<R, E> = { body };
///         ret
///     }).await
/// }
/// ```
fn wrap(args: &Args, handler: Handler) -> TokenStream {
    let Handler { item, invocation } = handler;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let outer = attrs.iter().filter(|a| matches!(a.style, AttrStyle::Outer));
    let inner = attrs
        .iter()
        .filter(|a| matches!(a.style, AttrStyle::Inner(_)));

    let private = quote!(::xrayprofile::__private);
    let option = |value: Option<TokenStream>| match value {
        Some(v) => quote!(#private::Option::Some(#v)),
        None => quote!(#private::Option::None),
    };
    let threshold = option(args.threshold.map(|(v, span)| quote_spanned!(span=> #v)));
    let bucket = option(args.bucket.as_ref().map(|b| quote!(#b)));
    let prefix = option(args.prefix.as_ref().map(|p| quote!(#p)));

    let site = quote_spanned!(Span::mixed_site()=> __XRAYPROFILE_SITE);
    let wrapper = quote_spanned!(Span::mixed_site()=> __xrayprofile_wrapper);
    let ret = quote_spanned!(Span::mixed_site()=> __xrayprofile_ret);
    // Spanned at the argument, so a type that carries no invocation is
    // reported there with the trait's `on_unimplemented` message.
    let begin = quote_spanned!(invocation.span()=> #private::Wrapper::begin(&#site, &#invocation));
    // Spanned at the declared return type, so a body of the wrong type is
    // reported against the signature the user wrote.
    let ret_decl = match &sig.output {
        ReturnType::Type(_, ty) => {
            quote_spanned!(syn::spanned::Spanned::span(ty)=> let #ret: #ty = #block;)
        }
        ReturnType::Default => quote!(let #ret: () = #block;),
    };

    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            static #site: #private::Site = #private::Site::new(#threshold, #bucket, #prefix, #private::Option::None);
            let #wrapper = #begin;
            #wrapper.run(async move {
                #ret_decl
                #ret
            }).await
        }
    }
}
