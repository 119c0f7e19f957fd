//! The shutdown signal of a running runner, which its loops await
//! repeatedly.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub(super) type Shutdown<'a> = Pin<&'a mut (dyn Future<Output = ()> + Send)>;

/// A shutdown signal that can be awaited repeatedly.
pub(super) struct Signal<'a> {
    future: Shutdown<'a>,
    fired: bool,
}

impl<'a> Signal<'a> {
    pub(super) fn new(future: Shutdown<'a>) -> Self {
        Self {
            future,
            fired: false,
        }
    }

    pub(super) async fn wait(&mut self) {
        if !self.fired {
            self.future.as_mut().await;
            self.fired = true;
        }
    }

    pub(super) fn fired(&mut self) -> bool {
        if !self.fired {
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            self.fired = self.future.as_mut().poll(&mut cx).is_ready();
        }
        self.fired
    }

    /// Sleeps for `duration`; false when shut down meanwhile.
    pub(super) async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = self.wait() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}
