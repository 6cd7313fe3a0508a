//! demo-p3-http: the HTTP demo as a WASI 0.3 `wasi:http/service` component. Its `handle` is
//! async, so one instance takes several requests, at once and one after another; only
//! `/instance` keeps state between them.
//!
//! Routes (demo-http's, plus `/instance`):
//! - `GET /` → 200 `hello from wasmcell`
//! - `POST /echo` → 200 with the request body
//! - `GET /status/N` → status N
//! - `GET /sleep/MS` → 200 after MS milliseconds
//! - `GET /trap` → traps (`unreachable`)
//! - `GET /env/NAME` → the variable's value, 404 when unset
//! - `GET /fetch?url=U` → GETs U (http or https) and answers `STATUS\nBODY`; 502 with the
//!   host's error code when the request is refused or fails
//! - `GET /instance` → `requests N`: how many requests this instance has taken, this one
//!   included
//!
//! Each request writes one line to stdout (`METHOD PATH STATUS`) unless `DEMO_HTTP_QUIET` is
//! set, as demo-http does.

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::cli::{environment, stdout};
use wasip3::http::client;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(DemoP3Http);

struct DemoP3Http;

/// Requests this instance has taken.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

impl wasip3::exports::http::handler::Guest for DemoP3Http {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let taken = REQUESTS.fetch_add(1, Ordering::Relaxed) + 1;
        let method = request.get_method();
        let target = request
            .get_path_with_query()
            .unwrap_or_else(|| "/".to_owned());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let (status, body) = route(&method, path, query, request, taken).await;
        if env("DEMO_HTTP_QUIET").is_none() {
            log(format!("{} {path} {status}\n", method_name(&method))).await;
        }
        Ok(respond(status, body))
    }
}

async fn route(
    method: &Method,
    path: &str,
    query: &str,
    request: Request,
    taken: u64,
) -> (u16, Vec<u8>) {
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    match (method, segments.as_slice()) {
        (Method::Get, [""]) => (200, b"hello from wasmcell\n".to_vec()),
        (Method::Post, ["echo"]) => match read_body(request).await {
            Ok(body) => (200, body),
            Err(e) => (400, format!("reading the body: {e}\n").into_bytes()),
        },
        (Method::Get, ["status", code]) => match code.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => (code, format!("status {code}\n").into()),
            _ => (400, format!("not a status code: {code:?}\n").into_bytes()),
        },
        (Method::Get, ["sleep", ms]) => match ms.parse::<u64>() {
            Ok(ms) => {
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                (200, format!("slept {ms} ms\n").into_bytes())
            }
            Err(e) => (
                400,
                format!("not a number of milliseconds: {e}\n").into_bytes(),
            ),
        },
        (Method::Get, ["trap"]) => core::arch::wasm32::unreachable(),
        (Method::Get, ["env", name]) => match env(name) {
            Some(value) => (200, format!("{value}\n").into_bytes()),
            None => (404, format!("{name} is not set\n").into_bytes()),
        },
        (Method::Get, ["fetch"]) => match query.strip_prefix("url=") {
            Some(url) => fetch(url).await,
            None => (400, b"usage: /fetch?url=http://host:port/path\n".to_vec()),
        },
        (Method::Get, ["instance"]) => (200, format!("requests {taken}\n").into_bytes()),
        _ => (
            404,
            format!("no route for {} {path}\n", method_name(method)).into_bytes(),
        ),
    }
}

fn env(name: &str) -> Option<String> {
    environment::get_environment()
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

async fn log(line: String) {
    let (mut tx, rx) = wit_stream::new();
    let done = stdout::write_via_stream(rx);
    tx.write_all(line.into_bytes()).await;
    drop(tx);
    let _ = done.await;
}

async fn read_body(request: Request) -> Result<Vec<u8>, String> {
    let (_consumed, consumed_rx) = wit_future::new(|| Ok(()));
    let (contents, trailers) = Request::consume_body(request, consumed_rx);
    let bytes = contents.collect().await;
    trailers.await.map_err(|e| format!("{e:?}"))?;
    Ok(bytes)
}

async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return (
            400,
            format!("only http:// and https:// URLs: {url:?}\n").into_bytes(),
        );
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (_trailers, trailers_rx) = wit_future::new(|| Ok(None));
    let (outgoing, _sent) = Request::new(Fields::new(), None, trailers_rx, None);
    let set = outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(authority)).is_ok()
        && outgoing.set_path_with_query(Some(path)).is_ok();
    if !set {
        return (400, format!("not a valid URL: {url:?}\n").into_bytes());
    }
    let response = match client::send(outgoing).await {
        Ok(response) => response,
        Err(code) => return (502, format!("fetch {url}: {code:?}\n").into_bytes()),
    };
    let status = response.get_status_code();
    let (_consumed, consumed_rx) = wit_future::new(|| Ok(()));
    let (contents, trailers) = Response::consume_body(response, consumed_rx);
    let body = contents.collect().await;
    if let Err(e) = trailers.await {
        return (
            502,
            format!("fetch {url}: reading the body: {e:?}\n").into_bytes(),
        );
    }
    let mut answer = format!("{status}\n").into_bytes();
    answer.extend_from_slice(&body);
    (200, answer)
}

/// The response, its body written by a task of its own once `handle` has returned it.
fn respond(status: u16, body: Vec<u8>) -> Response {
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), b"text/plain".to_vec()),
        (
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .unwrap_or_else(|_| Fields::new());
    let (mut body_tx, body_rx) = wit_stream::new();
    let (_trailers, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    let _ = response.set_status_code(status);
    wit_bindgen::spawn(async move {
        // A client that went away is not this component's error.
        body_tx.write_all(body).await;
    });
    response
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}
