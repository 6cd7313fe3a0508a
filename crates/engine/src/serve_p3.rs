//! Instances for a WASI 0.3 HTTP component (`wasi:http/service`, exporting
//! `wasi:http/handler@0.3.x`): unlike a 0.2 handler, a 0.3 `handle` is an async export, so one
//! instance can take several requests at once and go on to later ones. Dispatch is
//! wasmtime-wasi-http's `ProxyHandler` (as `wasmtime serve` uses for 0.3); this module decides
//! when an instance is made, how many requests it takes, and when it is dropped.
//!
//! The rules, with their defaults ([`InstanceReuse`]):
//! - a new instance is made only when no live one accepts another request;
//! - an instance takes at most 16 requests at once and 128 in its life, then is dropped once
//!   those are answered (a leak or corruption in the guest does not outlive it);
//! - an instance idle for 1 s is dropped (memory goes back to the pool);
//! - an instance still busy [`ServeLimits::request_timeout`] after its latest request was
//!   accepted is dropped with everything it runs (the request itself is answered `504` by the
//!   server at its own deadline);
//! - an instance that traps is dropped, and every request it had gets `500`.
//!
//! [`ServeLimits::request_timeout`]: crate::ServeLimits::request_timeout

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::serve::{InstantiateTimes, RequestState, request_store, start_running};

/// How a 0.3 component's instances are shared between requests. Every default is stated on its
/// field; they are `wasmtime serve`'s for 0.3 components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// Requests one instance handles in its life before it is dropped. Default 128; 1 gives
    /// every request a fresh instance, as 0.2 components get.
    pub max_requests: usize,
    /// Requests one instance handles at once. Default 16.
    pub max_concurrent: usize,
    /// How long an instance with nothing to do is kept for the next request. Default 1 s.
    pub idle_timeout: Duration,
}

impl Default for InstanceReuse {
    fn default() -> Self {
        InstanceReuse {
            max_requests: 128,
            max_concurrent: 16,
            idle_timeout: Duration::from_secs(1),
        }
    }
}

/// What every instance of one server is made from.
pub(crate) struct ServiceInstances {
    pub(crate) pre: ServicePre<RequestState>,
    /// A fresh store's data: environment, output streams, outbound hooks, memory cap.
    pub(crate) new_state: Arc<dyn Fn() -> RequestState + Send + Sync>,
    pub(crate) times: Arc<InstantiateTimes>,
    pub(crate) reuse: InstanceReuse,
    pub(crate) request_timeout: Duration,
}

impl HandlerState for ServiceInstances {
    type StoreData = RequestState;
    type WorkerExpiration = Expiry;
    type WorkerState = InstanceLife;

    async fn instantiate(&self) -> wasmtime::Result<Instance<RequestState, Expiry, InstanceLife>> {
        let mut store = request_store(self.pre.engine(), (self.new_state)());
        store.limiter(|state| &mut state.limits);
        let started = Instant::now();
        let service = self.pre.instantiate_async(&mut store).await?;
        self.times.record(started.elapsed());
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <RequestState as WasiHttpView>::http,
            expiration: Expiry::new(self.reuse.idle_timeout, self.request_timeout),
            state: InstanceLife {
                reuse: self.reuse,
                request_timeout: self.request_timeout,
            },
        })
    }
}

/// One instance's admission rule and end.
pub(crate) struct InstanceLife {
    reuse: InstanceReuse,
    request_timeout: Duration,
}

impl WorkerState for InstanceLife {
    type StoreData = RequestState;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse.max_requests.max(1) {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent.max(1) {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, RequestState>,
        (): (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        // The instance may have been idle across many ticks: the new request gets its own
        // first slice before the guest yields.
        start_running(&mut store);
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, _store: Store<RequestState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            let message = format!("{e:#}").replace('\n', " ");
            crate::stderr_line(&format!("wasmcell: a request's handler trapped: {message}"));
        }
    }
}

/// When an instance is dropped: idle past the idle timeout, or busy past the request timeout
/// since its latest request was accepted.
pub(crate) struct Expiry {
    idle: Duration,
    busy: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed_for: Option<(WorkerStatus, Instant)>,
}

impl Expiry {
    fn new(idle: Duration, busy: Duration) -> Self {
        Expiry {
            idle,
            busy,
            timer: Box::pin(tokio::time::sleep(busy)),
            armed_for: None,
        }
    }
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        if this.armed_for != Some((status, since)) {
            let limit = match status {
                WorkerStatus::Idle => this.idle,
                WorkerStatus::Requests | WorkerStatus::PostReturn => this.busy,
            };
            this.timer.as_mut().reset((since + limit).into());
            this.armed_for = Some((status, since));
        }
        this.timer.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_takes_requests_up_to_its_limits() {
        let life = InstanceLife {
            reuse: InstanceReuse {
                max_requests: 3,
                max_concurrent: 2,
                idle_timeout: Duration::from_secs(1),
            },
            request_timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            life.should_accept_request(0, 0),
            ShouldAccept::Yes
        ));
        assert!(matches!(
            life.should_accept_request(1, 1),
            ShouldAccept::Yes
        ));
        assert!(matches!(life.should_accept_request(2, 2), ShouldAccept::No));
        assert!(matches!(
            life.should_accept_request(0, 3),
            ShouldAccept::Never
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_busy_instances_expire_at_their_own_limits() {
        let mut expiry = Box::pin(Expiry::new(Duration::from_secs(1), Duration::from_secs(30)));
        let start = Instant::now();
        let poll = |expiry: &mut Pin<Box<Expiry>>, status| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            expiry.as_mut().poll(&mut cx, status, start)
        };
        assert!(poll(&mut expiry, WorkerStatus::Requests).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            poll(&mut expiry, WorkerStatus::Requests).is_pending(),
            "busy for 2 s of 30"
        );
        assert!(
            poll(&mut expiry, WorkerStatus::Idle).is_ready(),
            "idle for 2 s of 1"
        );
    }
}
