//! Runs a plugin future with a deadline, turning a panic into an error value.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a guarded plugin call produced no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PluginFailure {
    /// The call ran past its deadline.
    Timeout,
    /// The call panicked.
    Panic,
}

/// Polls a boxed future, catching a panic raised while polling it.
struct CatchUnwind<'a, T> {
    inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
}

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, PluginFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(PluginFailure::Panic)),
        }
    }
}

/// Awaits `fut` for at most `timeout`, catching panics.
pub(crate) async fn guarded<'a, T>(
    timeout: Duration,
    fut: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
) -> Result<T, PluginFailure> {
    match tokio::time::timeout(timeout, CatchUnwind { inner: fut }).await {
        Ok(r) => r,
        Err(_) => Err(PluginFailure::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_and_timeouts_become_values() {
        let ok = guarded(Duration::from_secs(1), Box::pin(async { 7 })).await;
        assert_eq!(ok, Ok(7));
        let panicked: Result<u8, _> = guarded(
            Duration::from_secs(1),
            Box::pin(async { panic!("plugin bug") }),
        )
        .await;
        assert_eq!(panicked, Err(PluginFailure::Panic));
        let slow = guarded(
            Duration::from_millis(10),
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                1
            }),
        )
        .await;
        assert_eq!(slow, Err(PluginFailure::Timeout));
    }
}
