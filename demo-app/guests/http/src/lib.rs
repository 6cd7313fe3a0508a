//! demo-http: wasmcell's HTTP demo, a `wasi:http/proxy` component. Every request gets a fresh
//! instance, so nothing here keeps state between requests.
//!
//! Routes:
//! - `GET /` → 200 `hello from wasmcell`
//! - `POST /echo` → 200 with the request body
//! - `GET /status/N` → status N
//! - `GET /sleep/MS` → 200 after MS milliseconds
//! - `GET /trap` → traps (`unreachable`)
//! - `GET /env/NAME` → the variable's value, 404 when unset
//! - `GET /fetch?url=U` → GETs U (http or https) and answers `STATUS\nBODY`; 502 with the
//!   host's error code when the request is refused or fails
//!
//! Each request writes one line to stdout (`METHOD PATH STATUS`), as a logging service would,
//! unless `DEMO_HTTP_QUIET` is set (the benchmark's measure of what that line costs).

use std::io::{Read as _, Write as _};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};

struct DemoHttp;

wasip2::http::proxy::export!(DemoHttp);

impl Guest for DemoHttp {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = request.method();
        let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let (status, body) = route(&method, path, query, &request);
        if std::env::var_os("DEMO_HTTP_QUIET").is_none() {
            println!("{} {path} {status}", method_name(&method));
        }
        respond(response_out, status, &body);
    }
}

fn route(method: &Method, path: &str, query: &str, request: &IncomingRequest) -> (u16, Vec<u8>) {
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    match (method, segments.as_slice()) {
        (Method::Get, [""]) => (200, b"hello from wasmcell\n".to_vec()),
        (Method::Post, ["echo"]) => match read_body(request) {
            Ok(body) => (200, body),
            Err(e) => (400, format!("reading the body: {e}\n").into_bytes()),
        },
        (Method::Get, ["status", code]) => match code.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => (code, format!("status {code}\n").into()),
            _ => (400, format!("not a status code: {code:?}\n").into_bytes()),
        },
        (Method::Get, ["sleep", ms]) => match ms.parse::<u64>() {
            Ok(ms) => {
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                (200, format!("slept {ms} ms\n").into_bytes())
            }
            Err(e) => (
                400,
                format!("not a number of milliseconds: {e}\n").into_bytes(),
            ),
        },
        (Method::Get, ["trap"]) => core::arch::wasm32::unreachable(),
        (Method::Get, ["env", name]) => match std::env::var(name) {
            Ok(value) => (200, format!("{value}\n").into_bytes()),
            Err(_) => (404, format!("{name} is not set\n").into_bytes()),
        },
        (Method::Get, ["fetch"]) => match query.strip_prefix("url=") {
            Some(url) => fetch(url),
            None => (400, b"usage: /fetch?url=http://host:port/path\n".to_vec()),
        },
        _ => (
            404,
            format!("no route for {} {path}\n", method_name(method)).into_bytes(),
        ),
    }
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request.consume().map_err(|()| "body already taken")?;
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| "body stream already taken")?;
        stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    }
    IncomingBody::finish(body);
    Ok(bytes)
}

fn fetch(url: &str) -> (u16, Vec<u8>) {
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
    let outgoing = OutgoingRequest::new(Fields::new());
    let set = outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(authority)).is_ok()
        && outgoing.set_path_with_query(Some(path)).is_ok();
    if !set {
        return (400, format!("not a valid URL: {url:?}\n").into_bytes());
    }
    let response = match outgoing_handler::handle(outgoing, None) {
        Ok(future) => loop {
            match future.get() {
                Some(Ok(result)) => break result,
                Some(Err(())) => break Err(ErrorCode::InternalError(None)),
                None => future.subscribe().block(),
            }
        },
        Err(code) => Err(code),
    };
    let response = match response {
        Ok(response) => response,
        Err(code) => return (502, format!("fetch {url}: {code:?}\n").into_bytes()),
    };
    let status = response.status();
    let mut body = Vec::new();
    if let Ok(incoming) = response.consume() {
        if let Ok(mut stream) = incoming.stream()
            && let Err(e) = stream.read_to_end(&mut body)
        {
            return (
                502,
                format!("fetch {url}: reading the body: {e}\n").into_bytes(),
            );
        }
        IncomingBody::finish(incoming);
    }
    let mut answer = format!("{status}\n").into_bytes();
    answer.extend_from_slice(&body);
    (200, answer)
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), b"text/plain".to_vec()),
        (
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(mut stream) = outgoing.write() {
        // A client that went away is not this component's error.
        let _ = stream
            .write_all(body)
            .and_then(|()| std::io::Write::flush(&mut stream));
    }
    let _ = OutgoingBody::finish(outgoing, None);
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
