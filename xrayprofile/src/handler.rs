//! What `#[xrayprofile]` asks of the handler it wraps: a first argument that
//! carries the Lambda invocation ([`Invocation`]) and a `Result` output
//! ([`HandlerOutput`]). Both carry the compile error a misfit handler gets.

use lambda_runtime::{Context, LambdaEvent};

/// A handler argument that carries the Lambda invocation: its request ID,
/// deadline, function ARN and X-Ray trace header.
///
/// `#[xrayprofile]` reads the invocation from the handler's first argument
/// (after `self`) through this trait. It is implemented for
/// [`LambdaEvent<T>`], [`Context`], references to them, and, with the `http`
/// feature, `lambda_http::Request`. It is sealed: only this crate implements
/// it, so new methods can be added without breaking anyone.
///
/// ```
/// use lambda_runtime::{Context, LambdaEvent};
/// use xrayprofile::Invocation;
///
/// let event = LambdaEvent::new(serde_json::json!({}), Context::default());
/// assert!(event.lambda_context().is_some());
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[xrayprofile]` cannot find the Lambda invocation in `{Self}`",
    label = "the handler's first argument must carry the invocation",
    note = "make the first argument a `lambda_runtime::LambdaEvent<T>`, a `lambda_runtime::Context`, or (with the `http` feature) a `lambda_http::Request`"
)]
pub trait Invocation: sealed::Sealed {
    /// The invocation's context, as lambda_runtime received it; `None` when
    /// the argument carries none (a `lambda_http::Request` built by hand).
    fn lambda_context(&self) -> Option<&Context>;
}

impl<T> Invocation for LambdaEvent<T> {
    fn lambda_context(&self) -> Option<&Context> {
        Some(&self.context)
    }
}

impl Invocation for Context {
    fn lambda_context(&self) -> Option<&Context> {
        Some(self)
    }
}

impl<T: Invocation + ?Sized> Invocation for &T {
    fn lambda_context(&self) -> Option<&Context> {
        (**self).lambda_context()
    }
}

impl<T: Invocation + ?Sized> Invocation for &mut T {
    fn lambda_context(&self) -> Option<&Context> {
        (**self).lambda_context()
    }
}

#[cfg(feature = "http")]
impl Invocation for lambda_http::Request {
    fn lambda_context(&self) -> Option<&Context> {
        lambda_http::RequestExt::lambda_context_ref(self)
    }
}

mod sealed {
    use lambda_runtime::{Context, LambdaEvent};

    /// Implemented exactly where [`super::Invocation`] is; users cannot name
    /// it, so they cannot implement `Invocation`.
    #[allow(unreachable_pub)] // public so it may bound a public trait; unnameable outside
    pub trait Sealed {}

    impl<T> Sealed for LambdaEvent<T> {}
    impl Sealed for Context {}
    impl<T: Sealed + ?Sized> Sealed for &T {}
    impl<T: Sealed + ?Sized> Sealed for &mut T {}
    #[cfg(feature = "http")]
    impl Sealed for lambda_http::Request {}
}

/// What a handler returns: a `Result`, whose error side marks the profile's
/// outcome.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a `#[xrayprofile]` handler returns `Result<T, E>`, not `{Self}`",
    label = "change the return type to a `Result`",
    note = "lambda_runtime's `service_fn` expects handlers that return `Result<T, E>`"
)]
pub trait HandlerOutput {
    /// Whether the handler failed.
    fn is_error(&self) -> bool;
}

impl<T, E> HandlerOutput for Result<T, E> {
    fn is_error(&self) -> bool {
        self.is_err()
    }
}
