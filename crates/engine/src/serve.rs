//! Serving an HTTP component: HTTP/1.1 with keep-alive on hyper, bounded concurrency, a
//! per-request deadline, a body cap, outgoing requests checked against an allow-list, and a
//! drain on shutdown. A `wasi:http/proxy` (0.2) component gets one fresh instance per request
//! from a [`ProxyPre`] (the pooling allocator with copy-on-write heap images makes that
//! microseconds); a `wasi:http/service` (0.3) component's instances are shared between
//! requests (`serve_p3.rs`).
//!
//! What a client sees, by case:
//! - a request over the concurrency limit waits in a bounded queue; past it, `503`;
//! - a request whose handler runs past [`ServeLimits::request_timeout`] gets `504` (a busy
//!   guest yields to the runtime every epoch tick, so the deadline also stops a loop);
//! - a handler that traps, or returns without a response, gets `500`; the server goes on;
//! - a body over [`ServeLimits::max_request_body`] gets `413` when its length is declared,
//!   and the guest's read fails when it is not;
//! - after the shutdown future resolves: no new connections, in-flight requests finish (up
//!   to [`ServeLimits::drain_timeout`]), idle keep-alive connections are closed.
//!
//! Handlers' stdout and stderr are gathered and written to the process's own every 10 ms
//! (`handler_output.rs`), not once per write.

use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{ExpirationError, InstantiationError, ProxyHandler};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::EngineError;
use crate::handler_output::HandlerOutput;
use crate::host::HostWorld;
use crate::outbound::OutboundPolicy;
use crate::serve_p3::{InstanceReuse, ServiceInstances};

/// How often the engine's epoch advances: the granularity of the request deadline and how
/// often a busy handler yields to the runtime.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The server's limits. Every default is stated on its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Requests handled at once. Default 64.
    pub max_concurrent: usize,
    /// Requests waiting for a slot before further ones are answered `503`. Default 256.
    pub max_queued: usize,
    /// How long one request may take, from admission to its handler's return. Default 30 s.
    pub request_timeout: Duration,
    /// Largest request body a handler may read. Default 16 MiB.
    pub max_request_body: u64,
    /// Linear memory one instance may grow to; `None` leaves wasmtime's limit. Default `None`
    /// (the shim derives it from the container's memory limit).
    pub max_instance_memory: Option<u64>,
    /// How long a shutdown waits for in-flight requests before it gives up on them.
    /// Default 25 s: below Kubernetes' default 30 s grace period, so a pod stopped with the
    /// default grace drains before it is killed.
    pub drain_timeout: Duration,
    /// How a 0.3 component's instances are shared between requests (see [`InstanceReuse`]
    /// for each default). 0.2 components always get a fresh instance per request.
    pub instance_reuse: InstanceReuse,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_concurrent: 64,
            max_queued: 256,
            request_timeout: Duration::from_secs(30),
            max_request_body: 16 << 20,
            max_instance_memory: None,
            drain_timeout: Duration::from_secs(25),
            instance_reuse: InstanceReuse::default(),
        }
    }
}

/// What to serve with: the handler's environment and limits, and where outgoing requests may go.
#[derive(Debug, Clone, Default)]
pub struct ServeSpec {
    /// Environment variables every instance sees.
    pub env: Vec<(String, String)>,
    /// Limits (see [`ServeLimits`]).
    pub limits: ServeLimits,
    /// Destinations outgoing requests may reach (see [`OutboundPolicy`]); empty: none.
    pub allow_outbound: Vec<String>,
}

/// What a finished server reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests still in flight when the drain deadline passed.
    pub abandoned: usize,
    /// Median and 99th percentile of the time to instantiate a request's instance, in µs
    /// (`None` before the first request).
    pub instantiate_us: Option<(u32, u32)>,
}

/// Instantiation times in 1 µs buckets up to [`Self::BUCKETS`] µs (beyond: the last bucket):
/// bounded memory however long the server runs, exact where the figure matters.
pub(crate) struct InstantiateTimes {
    buckets: Vec<AtomicUsize>,
}

impl InstantiateTimes {
    const BUCKETS: usize = 4096;

    fn new() -> Self {
        InstantiateTimes {
            buckets: (0..Self::BUCKETS).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    pub(crate) fn record(&self, took: Duration) {
        let us = usize::try_from(took.as_micros()).unwrap_or(usize::MAX);
        if let Some(bucket) = self.buckets.get(us.min(Self::BUCKETS - 1)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (median, p99) in µs.
    fn percentiles(&self) -> Option<(u32, u32)> {
        let counts: Vec<usize> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: usize = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let at = |fraction: f64| {
            let rank = ((total as f64) * fraction).ceil().max(1.0) as usize;
            let mut seen = 0;
            counts
                .iter()
                .position(|c| {
                    seen += c;
                    seen >= rank
                })
                .unwrap_or(Self::BUCKETS - 1) as u32
        };
        Some((at(0.5), at(0.99)))
    }
}

/// One request's store data.
pub(crate) struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundPolicy,
    pub(crate) limits: StoreLimits,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The linker HTTP components are checked against and served with: WASI 0.2 (async) and
/// `wasi:http`.
pub(crate) fn proxy_linker<T>(engine: &Engine) -> Result<Linker<T>, EngineError>
where
    T: WasiView + WasiHttpView + 'static,
{
    let mut linker = Linker::new(engine);
    let link = |e: wasmtime::Error| EngineError::Link {
        world: "wasi:http/proxy",
        source: e.into(),
    };
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
    Ok(linker)
}

/// The linker WASI 0.3 HTTP components are checked against and served with: everything
/// [`proxy_linker`] defines, and WASI 0.3 with its `wasi:http`.
pub(crate) fn service_linker<T>(engine: &Engine) -> Result<Linker<T>, EngineError>
where
    T: WasiView + WasiHttpView + 'static,
{
    let mut linker = proxy_linker(engine)?;
    let link = |e: wasmtime::Error| EngineError::Link {
        world: "wasi:http/service",
        source: e.into(),
    };
    wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(link)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(link)?;
    Ok(linker)
}

/// What requests are handed to, by the component's world.
enum Handlers {
    /// 0.2: a fresh instance per request.
    Proxy(ProxyPre<RequestState>),
    /// 0.3: instances shared between requests; each worker thread makes its own.
    Service(ServicePre<RequestState>),
}

struct Server {
    engine: Engine,
    handlers: Handlers,
    spec: ServeSpec,
    outbound: OutboundPolicy,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    answered: AtomicUsize,
    instantiate: Arc<InstantiateTimes>,
    output: HandlerOutput,
}

/// Serves `component` on `listener` with `workers` threads until `shutdown` resolves, then
/// drains.
///
/// Each worker is a single-threaded tokio runtime that accepts from its own handle on the one
/// listening socket and runs its connections' requests to the end: a request never crosses a
/// thread, so serving one costs no cross-thread wake-up (with a shared work-stealing runtime,
/// those wake-ups and their context switches were most of the kernel's time per request).
/// The idle worker is the one that takes a new connection first, which balances them. A
/// handler that computes without waiting yields every [`EPOCH_TICK`], so the connections that
/// share its worker wait at most that long for a turn.
pub(crate) fn serve<F>(
    engine: &Engine,
    component: &Component,
    listener: StdTcpListener,
    spec: ServeSpec,
    workers: usize,
    shutdown: impl FnOnce() -> F,
) -> Result<ServeSummary, EngineError>
where
    F: Future<Output = ()>,
{
    let refused = |e: wasmtime::Error| EngineError::Instantiate {
        kind: "component",
        source: e.into(),
    };
    let handlers = if crate::run::component_world_of(engine, component)? == HostWorld::ServiceP3 {
        let linker = service_linker::<RequestState>(engine)?;
        let pre = linker.instantiate_pre(component).map_err(refused)?;
        Handlers::Service(ServicePre::new(pre).map_err(refused)?)
    } else {
        let linker = proxy_linker::<RequestState>(engine)?;
        let pre = linker.instantiate_pre(component).map_err(refused)?;
        Handlers::Proxy(ProxyPre::new(pre).map_err(refused)?)
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| EngineError::Listen { source })?;
    let server = Arc::new(Server {
        engine: engine.clone(),
        handlers,
        outbound: OutboundPolicy::new(&spec.allow_outbound),
        slots: Arc::new(tokio::sync::Semaphore::new(
            spec.limits.max_concurrent.max(1),
        )),
        waiting: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        instantiate: Arc::new(InstantiateTimes::new()),
        output: HandlerOutput::start(),
        spec,
    });
    // Every fallible step happens here, before any thread starts: a worker that could not
    // start would leave the others serving without it.
    let worker = || -> Result<_, EngineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| EngineError::Runtime { source })?;
        let own = listener
            .try_clone()
            .map_err(|source| EngineError::Listen { source })?;
        let own = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(own)
                .map_err(|source| EngineError::Listen { source })?
        };
        Ok((runtime, own))
    };
    let (first, first_listener) = worker()?;
    let others = (1..workers.max(1))
        .map(|_| worker())
        .collect::<Result<Vec<_>, _>>()?;
    drop(listener);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for (index, (runtime, own)) in others.into_iter().enumerate() {
        let server = server.clone();
        let stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wasmcell-http-{}", index + 1))
            .spawn(move || runtime.block_on(server.accept_until(own, stopped)));
        match thread {
            Ok(thread) => threads.push(thread),
            Err(source) => {
                let _ = stop.send(true);
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(EngineError::Runtime { source });
            }
        }
    }
    let mut abandoned = first.block_on(async {
        let ticker = {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(EPOCH_TICK);
                loop {
                    interval.tick().await;
                    engine.increment_epoch();
                }
            })
        };
        let shutdown = shutdown();
        let (abandoned, ()) = tokio::join!(
            server.clone().accept_until(first_listener, stopped),
            async {
                shutdown.await;
                let _ = stop.send(true);
            }
        );
        ticker.abort();
        abandoned
    });
    for thread in threads {
        // A worker that panicked has lost its connections; count them as one abandoned.
        abandoned += thread.join().unwrap_or(1);
    }
    let _ = server.output.stdout.flush();
    let _ = server.output.stderr.flush();
    Ok(ServeSummary {
        requests: server.answered.load(Ordering::Relaxed) as u64,
        abandoned,
        instantiate_us: server.instantiate.percentiles(),
    })
}

impl Server {
    /// One worker: accepts on `listener` until `stop` turns true, then closes its handle on the
    /// socket (new connections are refused once every worker's is closed) and drains its
    /// connections. Returns how many were still open at the drain deadline.
    async fn accept_until(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> usize {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let connections = Arc::new(AtomicUsize::new(0));
        // This worker's own 0.3 instances: a request never waits on another thread's.
        let service = match &self.handlers {
            Handlers::Service(pre) => Some(ProxyHandler::new(ServiceInstances {
                pre: pre.clone(),
                new_state: {
                    let server = self.clone();
                    Arc::new(move || server.request_state())
                },
                times: self.instantiate.clone(),
                reuse: self.spec.limits.instance_reuse,
                request_timeout: self.spec.limits.request_timeout,
            })),
            Handlers::Proxy(_) => None,
        };
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        // Out of fds or a connection reset before accept: keep serving.
                        Err(e) => {
                            log::warn!("accepting a connection: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    let instances = service.clone();
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        let instances = instances.clone();
                        async move {
                            let response = server.answer(request, instances.as_ref()).await;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    let open = connections.clone();
                    open.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            log::debug!("connection: {e}");
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
        }
        drop(listener);
        let drain = self.spec.limits.drain_timeout;
        match tokio::time::timeout(drain, graceful.shutdown()).await {
            Ok(()) => 0,
            Err(_) => connections.load(Ordering::Relaxed),
        }
    }

    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
        service: Option<&ProxyHandler<ServiceInstances>>,
    ) -> Response<HyperOutgoingBody> {
        let response = self.clone().admit(request, service).await;
        self.answered.fetch_add(1, Ordering::Relaxed);
        response
    }

    /// Queue, then run; past the queue bound, 503.
    async fn admit(
        self: Arc<Self>,
        request: Request<Incoming>,
        service: Option<&ProxyHandler<ServiceInstances>>,
    ) -> Response<HyperOutgoingBody> {
        // A declared body over the cap is refused before it takes a slot or a queue place.
        let max_body = self.spec.limits.max_request_body;
        if let Some(length) = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && length > max_body
        {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "wasmcell: request body of {length} bytes is over the {max_body} byte limit\n"
                ),
            );
        }
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.spec.limits.max_queued {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "wasmcell: too many requests in flight\n",
                    );
                }
                let permit = self.slots.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                }
            }
        };
        let request = self.limit_body(request);
        match (&self.handlers, service) {
            (Handlers::Service(_), Some(service)) => {
                let response = self.dispatch(request, service).await;
                drop(permit);
                response
            }
            (Handlers::Proxy(pre), _) => self.clone().run(pre.clone(), request, permit).await,
            (Handlers::Service(_), None) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "wasmcell: no handler for this worker\n",
            ),
        }
    }

    /// The request with its body capped at [`ServeLimits::max_request_body`]: reading past it
    /// fails with `HTTP-request-body-size`.
    fn limit_body(&self, request: Request<Incoming>) -> Request<HyperOutgoingBody> {
        let cap = self.spec.limits.max_request_body;
        request.map(|body| {
            http_body_util::Limited::new(body, usize::try_from(cap).unwrap_or(usize::MAX))
                .map_err(move |e| match e.downcast::<hyper::Error>() {
                    Ok(hyper) => wasmtime_wasi_http::Error::Hyper(*hyper),
                    // The only other error `Limited` makes: the body passed the cap.
                    Err(_) => ErrorCode::HttpRequestBodySize(Some(cap)).into(),
                })
                .boxed_unsync()
        })
    }

    /// A fresh store's data: the handlers' environment and output, the outbound policy, and
    /// the per-instance memory cap.
    fn request_state(&self) -> RequestState {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&self.spec.env)
            .stdout(self.output.stream(false))
            .stderr(self.output.stream(true));
        let mut store_limits = StoreLimitsBuilder::new().trap_on_grow_failure(false);
        if let Some(max) = self.spec.limits.max_instance_memory {
            store_limits = store_limits.memory_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        RequestState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: self.outbound.clone(),
            limits: store_limits.build(),
        }
    }

    /// Hands a request to one of this worker's 0.3 instances, within the request's deadline.
    /// When every slot of the instance pool is taken (by instances still finishing an expired
    /// request, or kept idle by another worker), the request waits for one to be dropped, up
    /// to its deadline; it is answered `503` only then.
    async fn dispatch(
        &self,
        mut request: Request<HyperOutgoingBody>,
        service: &ProxyHandler<ServiceInstances>,
    ) -> Response<HyperOutgoingBody> {
        const SLOT_RETRY: Duration = Duration::from_millis(5);
        let limits = &self.spec.limits;
        let deadline = Instant::now() + limits.request_timeout;
        loop {
            let handled =
                tokio::time::timeout_at(deadline.into(), service.handle((), request)).await;
            let error = match handled {
                Ok(Ok(response)) => return response,
                Err(_elapsed) => return timed_out(limits),
                Ok(Err(error)) => error,
            };
            if error.is::<ExpirationError>() {
                return timed_out(limits);
            }
            let failed = match error.downcast::<InstantiationError<()>>() {
                Ok(failed) => failed,
                // A trap is logged once, when its instance is dropped (serve_p3.rs); an error
                // code the guest returned is the guest's answer.
                Err(error) => {
                    return plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!(
                            "wasmcell: the handler failed: {}\n",
                            format!("{error:#}").replace('\n', " ")
                        ),
                    );
                }
            };
            let pool_full = failed.error.is::<wasmtime::PoolConcurrencyLimitError>();
            if pool_full && Instant::now() + SLOT_RETRY < deadline {
                request = failed
                    .request
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                tokio::time::sleep(SLOT_RETRY).await;
                continue;
            }
            let message = format!("{:#}", failed.error).replace('\n', " ");
            crate::stderr_line(&format!("wasmcell: no instance for a request: {message}"));
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "wasmcell: no instance could be made for this request\n",
            );
        }
    }

    /// One fresh instance for one request. The instance holds `permit` until it is dropped
    /// (a handler may go on writing the body after it set the response), so live instances
    /// never outnumber the slots the pooling allocator was sized for.
    async fn run(
        self: Arc<Self>,
        pre: ProxyPre<RequestState>,
        request: Request<HyperOutgoingBody>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Response<HyperOutgoingBody> {
        let limits = self.spec.limits.clone();
        let mut store = request_store(&self.engine, self.request_state());
        store.limiter(|state| &mut state.limits);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|req| {
                let out = store.data_mut().http().new_response_outparam(sender)?;
                Ok((req, out))
            });
        let (req, out) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("wasmcell: {e}\n")),
        };
        let times = self.instantiate.clone();
        let deadline = Instant::now() + limits.request_timeout;
        let held = HeldInstance {
            store,
            _permit: permit,
        };
        let task = tokio::spawn(tokio::time::timeout_at(deadline.into(), async move {
            let mut held = held;
            let store = &mut held.store;
            start_running(&mut *store);
            let started = Instant::now();
            let proxy = pre.instantiate_async(&mut *store).await?;
            times.record(started.elapsed());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await
        }));
        match tokio::time::timeout_at(deadline.into(), receiver).await {
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(code))) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("wasmcell: the handler failed: {code:?}\n"),
            ),
            // The handler returned or trapped without setting a response.
            Ok(Err(_)) => match task.await {
                Ok(Ok(Ok(()))) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "wasmcell: the handler returned without a response\n",
                ),
                Ok(Ok(Err(trap))) => {
                    let message = format!("{trap:#}").replace('\n', " ");
                    crate::stderr_line(&format!(
                        "wasmcell: a request's handler trapped: {message}"
                    ));
                    plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "wasmcell: the handler trapped\n",
                    )
                }
                Ok(Err(_elapsed)) => timed_out(&limits),
                Err(e) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("wasmcell: the handler task failed: {e}\n"),
                ),
            },
            Err(_elapsed) => {
                task.abort();
                timed_out(&limits)
            }
        }
    }
}

/// A 0.2 request's store and its concurrency permit, dropped in that order (fields drop in
/// declaration order): the instance's pool slot is back before the permit lets the next
/// request instantiate, so the pool, sized to the permits, is never found full.
struct HeldInstance {
    store: Store<RequestState>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A store for one request whose guest yields to the runtime at every epoch tick once it has
/// run for at least one full tick (see [`start_running`]).
pub(crate) fn request_store<T>(engine: &Engine, state: T) -> Store<T> {
    let mut store = Store::new(engine, state);
    store.epoch_deadline_async_yield_and_update(1);
    start_running(&mut store);
    store
}

/// Sets the first deadline of a request's guest, right before it runs: a store starts with a
/// deadline of zero, already passed, so without this every instance would yield at its first
/// epoch check, during instantiation, and wait behind every ready request a second time.
/// Two ticks rather than one: a request that waited for its turn across a tick, or that
/// starts just before one, is not sent to the back of the queue a moment after it began; it
/// runs for at least one tick before it first yields.
pub(crate) fn start_running<T: 'static>(mut store: impl wasmtime::AsContextMut<Data = T>) {
    let mut store = store.as_context_mut();
    store.set_epoch_deadline(2);
}

fn timed_out(limits: &ServeLimits) -> Response<HyperOutgoingBody> {
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "wasmcell: the handler did not answer within {:?}\n",
            limits.request_timeout
        ),
    )
}

/// A short text response from the server itself.
fn plain(status: StatusCode, text: &str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text.to_owned()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instantiation_runs_without_yielding_before_the_next_tick() -> wasmtime::Result<()> {
        let engine = Engine::new(&crate::config::serve_config(crate::config::ServePool {
            instances: 2,
            max_memory: None,
        }))?;
        // A start function: wasm code runs, with its epoch check, while instantiating.
        let wasm = wat::parse_str(
            r#"(component
                (core module $m (func $start) (start $start))
                (core instance (instantiate $m)))"#,
        )?;
        let component = Component::new(&engine, wasm)?;
        for _ in 0..3 {
            engine.increment_epoch();
        }
        let linker = Linker::<()>::new(&engine);
        let mut store = request_store(&engine, ());
        // A tick while the request waited for its turn.
        engine.increment_epoch();
        start_running(&mut store);
        let mut instantiate = std::pin::pin!(linker.instantiate_async(&mut store, &component));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match instantiate.as_mut().poll(&mut context) {
            std::task::Poll::Ready(result) => result.map(drop),
            std::task::Poll::Pending => Err(wasmtime::format_err!(
                "instantiation yielded before its first deadline"
            )),
        }
    }

    #[test]
    fn instantiation_percentiles_come_from_the_buckets() {
        let times = InstantiateTimes::new();
        assert_eq!(times.percentiles(), None);
        for us in 1..=100u64 {
            times.record(Duration::from_micros(us));
        }
        assert_eq!(times.percentiles(), Some((50, 99)));
        times.record(Duration::from_secs(1));
        assert_eq!(
            times.percentiles(),
            Some((51, 100)),
            "the p99 of 101 samples is the 100th; the slow outlier is not it"
        );
    }
}
