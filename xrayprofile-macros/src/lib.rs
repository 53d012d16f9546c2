//! The `#[xrayprofile]` attribute. Depend on the `xrayprofile` crate, which
//! re-exports it with its documentation; the generated code calls into that
//! crate.

#![forbid(unsafe_code)]
// A panicking macro gives "proc macro panicked" with no span; every failure is a syn::Error.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod args;
mod diag;
mod expand;
mod handler;

use proc_macro::TokenStream;

/// Profiles a sampled share of a Lambda handler's invocations; documented on
/// its re-export, `xrayprofile::xrayprofile`.
#[proc_macro_attribute]
pub fn xrayprofile(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
