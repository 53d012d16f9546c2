//! The annotated item: it must be an `async fn` whose first argument carries
//! the invocation. The body is kept as parsed and pasted back unchanged.

use syn::{FnArg, Ident, ItemFn, Pat, PatIdent};

use crate::diag::Diag;

/// What the expansion needs from the handler.
pub(crate) struct Handler {
    pub(crate) item: ItemFn,
    /// The first argument's binding, which the wrapper reads the context from.
    pub(crate) invocation: Ident,
}

impl Handler {
    /// Checks the handler's shape, recording each problem in `diag`.
    pub(crate) fn from_item(item: ItemFn, diag: &mut Diag) -> Option<Handler> {
        let sig = &item.sig;
        if let Some(constness) = &sig.constness {
            diag.error(
                constness,
                "`#[xrayprofile]` cannot wrap a `const fn`; remove `const`",
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            diag.error(unsafety, "`#[xrayprofile]` cannot wrap an `unsafe fn`; move the unsafe code into a helper the handler calls");
        }
        if let Some(abi) = &sig.abi {
            diag.error(
                abi,
                "`#[xrayprofile]` cannot wrap an `extern` fn; remove the ABI",
            );
        }
        if sig.asyncness.is_none() {
            diag.error(
                sig.fn_token,
                "`#[xrayprofile]` wraps async handlers only; add `async`",
            );
        }
        let invocation = match sig.inputs.first() {
            Some(FnArg::Typed(arg)) => match &*arg.pat {
                Pat::Ident(PatIdent {
                    ident,
                    by_ref: None,
                    subpat: None,
                    ..
                }) => Some(ident.clone()),
                other => {
                    diag.error(other, "`#[xrayprofile]` needs the first argument bound to a name; write `event: LambdaEvent<T>` and destructure it in the body");
                    None
                }
            },
            Some(FnArg::Receiver(receiver)) => {
                diag.error(receiver, "`#[xrayprofile]` does not support methods yet; make the handler a free function");
                None
            }
            None => {
                diag.error(&sig.ident, "`#[xrayprofile]` reads the invocation from the handler's first argument; add `event: LambdaEvent<T>`");
                None
            }
        };
        Some(Handler {
            invocation: invocation?,
            item,
        })
    }
}
