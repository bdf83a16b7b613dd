//! The actors that own the state-changing work, each with its own pool.
//!
//! Every actor is started under an actix `Supervisor`, which restarts an
//! actor that stops. A panic inside a message handler does not stop the
//! actor: each handler's work runs through [`guarded`], which catches the
//! panic, logs it and answers that one request 503, and the actor goes on
//! serving its mailbox. The InventoryActor catches a panicking batch itself
//! (its transaction is rolled back) and then stops, so that its Supervisor
//! restarts it with a fresh state.

pub mod cache;
pub mod catalog;
pub mod events;
pub mod inventory;
pub mod order;
pub mod user;

use std::{future::Future, panic::AssertUnwindSafe};

use actix::ResponseFuture;
use futures_util::FutureExt;

use crate::error::AppError;

/// A handler's work, answered 503 instead of taking the actor down if it
/// panics: the panic is logged with the actor's name, the caller gets
/// `AppError::Unavailable`, and the mailbox keeps flowing.
pub fn guarded<T: 'static>(
    actor: &'static str,
    work: impl Future<Output = Result<T, AppError>> + 'static,
) -> ResponseFuture<Result<T, AppError>> {
    guarded_or(actor, work, move |panic| {
        Err(AppError::Unavailable(anyhow::anyhow!(
            "{actor} handler panicked: {panic}"
        )))
    })
}

/// [`guarded`] for a reply that is not a `Result`: `fallback` answers the
/// request whose handler panicked.
pub fn guarded_or<T: 'static>(
    actor: &'static str,
    work: impl Future<Output = T> + 'static,
    fallback: impl FnOnce(&str) -> T + 'static,
) -> ResponseFuture<T> {
    Box::pin(AssertUnwindSafe(work).catch_unwind().map(move |result| {
        result.unwrap_or_else(|payload| {
            let panic = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(actor, panic = %panic, "message handler panicked; answered 503, the actor goes on");
            fallback(&panic)
        })
    }))
}

/// Test hook: the next message the actor handles panics inside its handler.
#[doc(hidden)]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct PanicNextMessage;
