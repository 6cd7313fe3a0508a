//! The client that a served component's allowed outgoing requests go through: HTTP/1.1 over TCP,
//! or over TLS (rustls with the webpki roots, as wasmtime-wasi-http's own client), keeping idle
//! connections per destination so a handler that calls the same service on every request does
//! not pay a connect (and a TLS handshake) each time.
//!
//! Defaults, per server:
//! - a connection is back in the pool the moment its response body has been read to the end
//!   (a guest that answers its own client right after does not race hyper's bookkeeping into a
//!   second connection); a body dropped early closes the connection instead;
//! - at most [`MAX_IDLE_PER_DESTINATION`] idle connections per scheme and authority; a
//!   connection beyond them is closed when its response ends;
//! - an idle connection unused for [`IDLE_TIMEOUT`] is closed when next looked at;
//! - a request that fails on a reused connection before any of it was sent (the peer closed
//!   the idle connection meanwhile) is retried once on a new connection;
//! - the guest's connect, first-byte and between-bytes timeouts apply; unset, 600 s each (the
//!   defaults of wasmtime-wasi-http's own client).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Idle connections kept per destination.
pub const MAX_IDLE_PER_DESTINATION: usize = 16;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a pooled connection whose response was read may take to be ready for the next
/// request (hyper finishes with the old one on the connection's own task) before a new
/// connection is opened instead.
const READY_WAIT: Duration = Duration::from_millis(200);

/// What the guest's timeouts default to when it sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a connection goes: TLS or not, and `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Destination {
    tls: bool,
    authority: String,
}

struct IdleConnection {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

/// A pooled HTTP/1.1 client; clones share the pool.
#[derive(Clone, Default)]
pub struct OutboundClient {
    idle: Arc<Mutex<HashMap<Destination, Vec<IdleConnection>>>>,
    tls: Arc<OnceLock<tokio_rustls::TlsConnector>>,
    connections_opened: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("connections_opened", &self.connections_opened())
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// Connections this client has opened so far (reuse keeps it below the request count).
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `request` (an absolute URI, as wasmtime-wasi-http hands it over) and returns the
    /// response; its body reads with the between-bytes timeout.
    pub async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let uri = request.uri();
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let destination = Destination {
            tls,
            authority: match authority.port() {
                Some(_) => authority.to_string(),
                None => format!("{authority}:{}", if tls { 443 } else { 80 }),
            },
        };
        let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
            options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
        };
        let connect_timeout = timeout(|o| o.connect_timeout);
        let first_byte_timeout = timeout(|o| o.first_byte_timeout);
        let between_bytes_timeout = timeout(|o| o.between_bytes_timeout);
        // On the wire the request line carries only the path: no proxy is involved.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

        let sent = async {
            if let Some(mut sender) = self.reuse_idle(&destination).await {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok((sender, response)),
                    Err(mut failed) => match failed.take_message() {
                        // Nothing was sent: the peer closed the idle connection. Once more,
                        // on a new one.
                        Some(unsent) => request = unsent,
                        None => return Err(Error::from(failed.into_error())),
                    },
                }
            }
            let mut sender = self.connect(&destination, connect_timeout).await?;
            let response = sender.send_request(request).await.map_err(Error::from)?;
            Ok((sender, response))
        };
        let (sender, response) = tokio::time::timeout(first_byte_timeout, sent)
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        let returning = ReturningConnection {
            pool: self.idle.clone(),
            destination,
            sender,
        };
        Ok(response.map(|incoming| {
            let mut returning = Some(returning);
            // A response without a body (a 204, a HEAD) frees the connection at once.
            if http_body::Body::is_end_stream(&incoming)
                && let Some(returning) = returning.take()
            {
                returning.give_back();
            }
            TimedBody {
                incoming,
                between_bytes: between_bytes_timeout.max(Duration::from_nanos(1)),
                timer: None,
                returning,
            }
            .boxed_unsync()
        }))
    }

    /// An idle connection to `destination` that is ready for a request, if the pool has one.
    async fn reuse_idle(&self, destination: &Destination) -> Option<SendRequest<WasiBody>> {
        while let Some(mut sender) = self.take_idle(destination) {
            // Back in the pool as soon as its body was read, it is ready once hyper has seen
            // the end of the response on the connection's task: a moment later.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
        None
    }

    fn take_idle(&self, destination: &Destination) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(destination)?;
        // The most recently used first: the likeliest to be alive.
        while let Some(connection) = list.pop() {
            if connection.since.elapsed() < IDLE_TIMEOUT && !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    async fn connect(
        &self,
        destination: &Destination,
        connect_timeout: Duration,
    ) -> Result<SendRequest<WasiBody>, Error> {
        let authority = &destination.authority;
        let handshake = async {
            let stream = TcpStream::connect(authority)
                .await
                .map_err(Error::Connect)?;
            let _ = stream.set_nodelay(true);
            if destination.tls {
                let name = server_name(authority)?;
                let stream = self
                    .tls_connector()?
                    .connect(name, stream)
                    .await
                    .map_err(Error::Tls)?;
                handshake(stream).await
            } else {
                handshake(stream).await
            }
        };
        let sender = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        self.connections_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(sender)
    }

    fn tls_connector(&self) -> Result<&tokio_rustls::TlsConnector, Error> {
        if let Some(connector) = self.tls.get() {
            return Ok(connector);
        }
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(std::io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(self
            .tls
            .get_or_init(|| tokio_rustls::TlsConnector::from(Arc::new(config))))
    }
}

/// The HTTP/1.1 handshake on a connected stream; the connection is driven by a task of its own
/// so it outlives the request that opened it.
async fn handshake<S>(stream: S) -> Result<SendRequest<WasiBody>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("outgoing connection: {e}");
        }
    });
    Ok(sender)
}

fn keep_idle(
    pool: &Mutex<HashMap<Destination, Vec<IdleConnection>>>,
    destination: Destination,
    sender: SendRequest<WasiBody>,
) {
    let Ok(mut idle) = pool.lock() else { return };
    let list = idle.entry(destination).or_default();
    list.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
    if list.len() < MAX_IDLE_PER_DESTINATION {
        list.push(IdleConnection {
            sender,
            since: Instant::now(),
        });
    }
}

/// The name the server's certificate must carry: the host of `host:port`, or its IP address.
fn server_name(authority: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    use rustls::pki_types::ServerName;
    if let Ok(address) = authority.parse::<std::net::SocketAddr>() {
        return Ok(ServerName::from(address.ip()));
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    ServerName::try_from(host.to_owned()).map_err(Error::InvalidDnsNameError)
}

/// A connection whose response is being read; it goes back to the pool when the body ends.
struct ReturningConnection {
    pool: Arc<Mutex<HashMap<Destination, Vec<IdleConnection>>>>,
    destination: Destination,
    sender: SendRequest<WasiBody>,
}

impl ReturningConnection {
    fn give_back(self) {
        keep_idle(&self.pool, self.destination, self.sender);
    }
}

/// A response body whose frames must come within the between-bytes timeout; read to the end,
/// it gives its connection back to the pool.
struct TimedBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    returning: Option<ReturningConnection>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => self.incoming.is_end_stream(),
                    Some(Err(_)) => {
                        self.returning = None;
                        false
                    }
                };
                if ended && let Some(returning) = self.returning.take() {
                    returning.give_back();
                }
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| {
                        if e.is_timeout() {
                            Error::HttpResponseTimeout
                        } else {
                            Error::from(e)
                        }
                    })
                }))
            }
            Poll::Pending => {
                let between_bytes = self.between_bytes;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between_bytes)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A server on loopback running `answer` on each accepted connection (a thread each);
    /// returns its port and a counter of accepted connections.
    fn server(answer: fn(std::net::TcpStream)) -> std::io::Result<(u16, Arc<AtomicUsize>)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer(stream));
            }
        });
        Ok((port, accepted))
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// Answers every request on the connection with `ok`, keeping it open.
    fn keep_alive(mut stream: std::net::TcpStream) {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                return;
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                if stream.write_all(OK).is_err() {
                    return;
                }
            }
        }
    }

    /// Answers one request, then closes the connection without saying so.
    fn one_and_close(mut stream: std::net::TcpStream) {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(OK);
    }

    fn get(port: u16) -> Result<http::Request<WasiBody>, http::Error> {
        http::Request::get(format!("http://127.0.0.1:{port}/path?q=1")).body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }

    /// Sends `count` requests one after the other, reading each body and waiting `pause`
    /// before the next, and returns the connections the client opened.
    async fn send_in_turn(
        port: u16,
        count: usize,
        pause: Duration,
    ) -> Result<u64, Box<dyn std::error::Error>> {
        let client = OutboundClient::default();
        for _ in 0..count {
            let response = client.send(get(port)?, None).await?;
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await?.to_bytes();
            assert_eq!(&body[..], b"ok");
            tokio::time::sleep(pause).await;
        }
        Ok(client.connections_opened())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_to_one_destination_are_reused() -> TestResult {
        let (port, accepted) = server(keep_alive)?;
        // No pause: the next request comes the moment the body ends, as a guest's does.
        assert_eq!(send_in_turn(port, 5, Duration::ZERO).await?, 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_closed_the_idle_connection_costs_a_new_one_not_an_error() -> TestResult {
        let (port, accepted) = server(one_and_close)?;
        // The pause lets the peer's close reach us before the connection is reused.
        assert_eq!(send_in_turn(port, 3, Duration::from_millis(30)).await?, 3);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connection_is_a_connect_error() -> TestResult {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let err = OutboundClient::default()
            .send(get(port)?, None)
            .await
            .err()
            .map(|e| format!("{e:?}"));
        assert!(
            err.as_deref().is_some_and(|e| e.starts_with("Connect")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn certificate_names_come_from_the_host() -> TestResult {
        use rustls::pki_types::ServerName;
        assert_eq!(
            server_name("example.com:443")?,
            ServerName::try_from("example.com")?
        );
        assert_eq!(
            server_name("[::1]:8443")?,
            ServerName::from(std::net::Ipv6Addr::LOCALHOST)
        );
        assert!(server_name("bad name:443").is_err());
        Ok(())
    }
}
