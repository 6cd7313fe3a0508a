//! Serving HTTP components through `ctr run --net-host` and as pods: the demo routes, the
//! limits (503, 504, 413), a trap answered 500, the outbound allow-list, and the drain on
//! SIGTERM; each for demo-http (`wasi:http/proxy`, WASI 0.2) and demo-p3-http
//! (`wasi:http/service`, WASI 0.3), whose instances are reused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmcell_tests::DEMO_IMAGES;
use wasmcell_tests::containerd::{Containerd, Version};

use crate::shim::{
    RUNTIME, containerd_with_demo_images, spares_of, text, wait_for_spares, wait_for_status,
};

on_2_1_and_1_7!(
    every_route_answers_and_a_trap_costs_one_request,
    the_artifact_serves_and_a_deny_policy_refuses_at_create,
    limits_answer_503_504_and_413,
    outbound_requests_need_the_policy,
    sigterm_drains_in_flight_requests,
    p3_every_route_answers_and_a_trap_costs_one_request,
    p3_limits_answer_503_504_and_413,
    p3_outbound_requests_need_the_policy,
    p3_sigterm_drains_in_flight_requests,
    p3_instances_are_reused_as_configured,
    p3_the_artifact_serves_and_a_deny_policy_refuses_at_create,
);

const HTTP_IMAGE: &str = "localhost/wasmcell/demo-http:latest";

/// One of the HTTP demos, as the tests serve it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpDemo {
    /// Its image tar (one of `DEMO_IMAGES`) and the name the tar gives the image.
    pub(crate) tar: &'static str,
    pub(crate) image: &'static str,
    /// Its program inside the image.
    pub(crate) program: &'static str,
}

/// demo-http: `wasi:http/proxy@0.2`, a fresh instance per request.
pub(crate) const P2: HttpDemo = HttpDemo {
    tar: "demo-http-image.tar",
    image: HTTP_IMAGE,
    program: "/demo-http.wasm",
};

/// demo-p3-http: `wasi:http/service@0.3`, instances shared between requests.
pub(crate) const P3: HttpDemo = HttpDemo {
    tar: "demo-p3-http-image.tar",
    image: "localhost/wasmcell/demo-p3-http:latest",
    program: "/demo-p3-http.wasm",
};

fn every_route_answers_and_a_trap_costs_one_request(version: Version) {
    every_route_answers_and_a_trap_costs_one_request_of(version, P2);
}

fn p3_every_route_answers_and_a_trap_costs_one_request(version: Version) {
    every_route_answers_and_a_trap_costs_one_request_of(version, P3);
}

fn limits_answer_503_504_and_413(version: Version) {
    limits_answer_503_504_and_413_of(version, P2);
}

fn p3_limits_answer_503_504_and_413(version: Version) {
    limits_answer_503_504_and_413_of(version, P3);
}

fn outbound_requests_need_the_policy(version: Version) {
    outbound_requests_need_the_policy_of(version, P2);
}

fn p3_outbound_requests_need_the_policy(version: Version) {
    outbound_requests_need_the_policy_of(version, P3);
}

fn sigterm_drains_in_flight_requests(version: Version) {
    sigterm_drains_in_flight_requests_of(version, P2);
}

fn p3_sigterm_drains_in_flight_requests(version: Version) {
    sigterm_drains_in_flight_requests_of(version, P3);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to `127.0.0.1:port` on a fresh connection; the status and the body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    request_to(&format!("127.0.0.1:{port}"), method, path, body)
}

/// One HTTP/1.1 request to `address` on a fresh connection; the status and the body.
fn request_to(
    address: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {raw:?}")))?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Starts `demo` detached as `id` on the host network, listening on `port`, with extra
/// `ctr run` flags; waits until it answers. Its stdout and stderr go to `log`.
fn serve(containerd: &Containerd, demo: HttpDemo, id: &str, port: u16, flags: &[&str], log: &Path) {
    serve_image(containerd, demo.image, demo.program, id, port, flags, log);
}

fn serve_image(
    containerd: &Containerd,
    image: &str,
    program: &str,
    id: &str,
    port: u16,
    flags: &[&str],
    log: &Path,
) {
    let addr = format!("WASMCELL_HTTP_ADDR=127.0.0.1:{port}");
    let log_uri = format!("file://{}", log.display());
    let mut args = vec![
        "run",
        "-d",
        "--net-host",
        "--log-uri",
        &log_uri,
        "--env",
        &addr,
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
    ];
    args.extend(flags);
    args.extend([image, id, program]);
    containerd.ctr_ok(&args);
    wait_for_status(containerd, id, "RUNNING");
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(port, "GET", "/", b"").is_err() {
        assert!(Instant::now() < deadline, "{id} never answered on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn containerd_with_http(version: Version, demo: HttpDemo) -> Option<Containerd> {
    let image = DEMO_IMAGES
        .into_iter()
        .find(|(tar, _)| *tar == demo.tar)
        .expect("the demo is one of DEMO_IMAGES");
    containerd_with_demo_images(version, &[image], false)
}

fn stop(containerd: &Containerd, id: &str) {
    containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_for_status(containerd, id, "STOPPED");
    containerd.ctr(&["task", "delete", id]);
    containerd.ctr(&["container", "delete", id]);
}

fn every_route_answers_and_a_trap_costs_one_request_of(version: Version, demo: HttpDemo) {
    let Some(containerd) = containerd_with_http(version, demo) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let log = temp.path().join("web.log");
    let port = free_port();
    serve(
        &containerd,
        demo,
        "web",
        port,
        &["--env", "GREETING=hi there"],
        &log,
    );

    assert_eq!(get(port, "/"), (200, "hello from wasmcell\n".to_owned()));
    let body = "x".repeat(100_000);
    assert_eq!(
        request(port, "POST", "/echo", body.as_bytes()).unwrap(),
        (200, body)
    );
    assert_eq!(get(port, "/status/418").0, 418);
    // Handlers' output is gathered and written every 10 ms: the line shows up while the
    // server runs, not only when it stops.
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("GET /status/418 418")
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the handler's log line is not in the log 5 s later"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(port, "/sleep/50"), (200, "slept 50 ms\n".to_owned()));
    assert_eq!(get(port, "/env/GREETING"), (200, "hi there\n".to_owned()));
    assert_eq!(get(port, "/env/NO_SUCH_VARIABLE").0, 404);
    assert_eq!(get(port, "/nowhere").0, 404);
    // A trap answers 500; the next request gets a fresh instance.
    let (status, body) = get(port, "/trap");
    assert_eq!(status, 500, "{body}");
    assert_eq!(get(port, "/"), (200, "hello from wasmcell\n".to_owned()));
    // Keep-alive: two requests on one connection.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..2 {
        write!(stream, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    stop(&containerd, "web");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("GET /status/418 418"), "{logged}");
    assert!(
        logged.contains("a request's handler trapped"),
        "the trap is logged: {logged}"
    );
}

/// The CNCF artifact form (imported with `wasmcell import`; its config's target is
/// `wasi:http/proxy@0.2.0`) serves like the image; a policy denying
/// `wasi:http/outgoing-handler` refuses demo-http at create, naming the import.
fn the_artifact_serves_and_a_deny_policy_refuses_at_create(version: Version) {
    let Some(containerd) = containerd_with_http(version, P2) else {
        return;
    };
    crate::shim::wasmcell_import(
        &containerd,
        &wasmcell_tests::demo_tar("demo-http-artifact.tar"),
    );
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    serve_image(
        &containerd,
        "localhost/wasmcell/demo-http-artifact:latest",
        "demo-http",
        "artifact",
        port,
        &[],
        &temp.path().join("artifact.log"),
    );
    assert_eq!(get(port, "/"), (200, "hello from wasmcell\n".to_owned()));
    assert_eq!(get(port, "/status/204").0, 204);
    stop(&containerd, "artifact");
    // `wasmcell import` compiled it ahead, for serving: the first container compiles nothing.
    let log = containerd.log();
    assert!(
        log.contains("container artifact: program loaded (cache hit;"),
        "{log}"
    );

    let policy = temp.path().join("no-egress.toml");
    std::fs::write(&policy, "deny = [\"wasi:http/outgoing-handler\"]\n").unwrap();
    let policy = policy.display().to_string();
    // A port of its own: the guest binds before it loads, and the other containerd version's
    // run of this test may hold the default port.
    let address = format!("WASMCELL_HTTP_ADDR=127.0.0.1:{}", free_port());
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--net-host",
        "--env",
        &address,
        "--runtime-config-path",
        &policy,
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        HTTP_IMAGE,
        "denied",
        "/demo-http.wasm",
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("(wasi:http/proxy@0.2.12)")
            && stderr.contains(&format!(
                "wasi:http/outgoing-handler@0.2.12 (denied by policy \"wasi:http/outgoing-handler\" from {policy})"
            )),
        "{stderr}"
    );
}

fn limits_answer_503_504_and_413_of(version: Version, demo: HttpDemo) {
    let Some(containerd) = containerd_with_http(version, demo) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    serve(
        &containerd,
        demo,
        "limited",
        port,
        &[
            "--env",
            "WASMCELL_HTTP_MAX_CONCURRENT=2",
            "--env",
            "WASMCELL_HTTP_MAX_QUEUED=2",
            "--env",
            "WASMCELL_HTTP_TIMEOUT_MS=1500",
            "--env",
            "WASMCELL_HTTP_MAX_BODY=1000",
        ],
        &temp.path().join("limited.log"),
    );
    // Twice the concurrency limit plus the queue, at once: only 200s and 503s.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| request(port, "GET", "/sleep/500", b"").map(|r| r.0)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(
        ok + busy,
        8,
        "only 200 and 503: {statuses:?}; the server's log:\n{}",
        std::fs::read_to_string(temp.path().join("limited.log")).unwrap_or_default()
    );
    assert!(ok >= 2 && busy >= 1, "{statuses:?}");
    // Past the deadline: 504, and the server goes on.
    let started = Instant::now();
    let (status, body) = get(port, "/sleep/5000");
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(get(port, "/").0, 200);
    // A declared body over the cap: 413 before the handler runs.
    let (status, body) = request(port, "POST", "/echo", &[b'x'; 5000]).unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("over the 1000 byte limit"), "{body}");
    assert_eq!(
        request(port, "POST", "/echo", b"small").unwrap(),
        (200, "small".to_owned())
    );
    stop(&containerd, "limited");
}

fn outbound_requests_need_the_policy_of(version: Version, demo: HttpDemo) {
    let Some(containerd) = containerd_with_http(version, demo) else {
        return;
    };
    // The destination: a keep-alive HTTP server on the test's loopback that counts the
    // connections it accepts.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for mut stream in upstream.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 2048];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nupstream\n";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let accepted_so_far = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    let temp = tempfile::tempdir().unwrap();
    let url = format!("/fetch?url=http://127.0.0.1:{upstream_port}/");

    let denied_log = temp.path().join("denied.log");
    let port = free_port();
    serve(&containerd, demo, "closed", port, &[], &denied_log);
    for _ in 0..3 {
        let (status, body) = get(port, &url);
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("HttpRequestDenied"), "{body}");
    }
    stop(&containerd, "closed");
    assert_eq!(accepted_so_far(), 0, "denied before any connection is made");
    let logged = std::fs::read_to_string(&denied_log).unwrap_or_default();
    let destination = format!("http://127.0.0.1:{upstream_port}");
    assert_eq!(
        logged
            .matches(&format!("outgoing HTTP request to {destination} denied"))
            .count(),
        1,
        "logged once per destination: {logged}"
    );

    let policy = temp.path().join("open.toml");
    std::fs::write(
        &policy,
        format!("allow_outbound = [\"http://127.0.0.1:{upstream_port}\"]\n"),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let port = free_port();
    serve(
        &containerd,
        demo,
        "open",
        port,
        &["--runtime-config-path", &policy],
        &temp.path().join("open.log"),
    );
    for _ in 0..3 {
        assert_eq!(get(port, &url), (200, "200\nupstream\n".to_owned()));
    }
    stop(&containerd, "open");
    // Each request is a fresh instance; the server's client keeps the connection between them.
    assert_eq!(accepted_so_far(), 1, "three fetches, one connection");
}

fn sigterm_drains_in_flight_requests_of(version: Version, demo: HttpDemo) {
    let Some(containerd) = containerd_with_http(version, demo) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let log = temp.path().join("drain.log");
    let port = free_port();
    // Served by a spare server (crate `shim`'s `spare`): the first container's server is
    // spawned, the second's forked by the starter, and that one waits for the next. Its
    // guest's signals must reach the guest, not the spare it was forked below.
    for warm in ["warm-1", "warm-2"] {
        serve(
            &containerd,
            demo,
            warm,
            port,
            &[],
            &temp.path().join("warm.log"),
        );
        stop(&containerd, warm);
    }
    let spares = wait_for_spares(&containerd);
    serve(&containerd, demo, "drain", port, &[], &log);
    assert!(
        spares
            .iter()
            .all(|spare| !spares_of(&containerd).contains(spare)),
        "a spare serves the drain: {spares:?}"
    );
    let results = std::thread::scope(|scope| {
        let in_flight: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| request(port, "GET", "/sleep/2000", b"")))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let signalled = Instant::now();
        containerd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "drain"]);
        // New connections are refused once the drain starts, while the ten still run.
        let deadline = Instant::now() + Duration::from_secs(1);
        while TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "still accepting connections after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let results: Vec<_> = in_flight.into_iter().map(|h| h.join().unwrap()).collect();
        (results, signalled.elapsed())
    });
    let (results, drained_in) = results;
    for result in &results {
        assert_eq!(result.as_ref().map(|r| r.0).ok(), Some(200), "{results:?}");
    }
    wait_for_status(&containerd, "drain", "STOPPED");
    // ctr exits with the task's status.
    let deleted = containerd.ctr(&["task", "delete", "drain"]);
    assert!(
        deleted.status.success(),
        "a drained server exits 0: {:?} {}{}",
        deleted.status,
        text(&deleted.stdout),
        text(&deleted.stderr)
    );
    containerd.ctr(&["container", "delete", "drain"]);
    eprintln!("drain: SIGTERM to the last of ten 2 s requests answered in {drained_in:?}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("draining"), "{logged}");
    assert!(
        logged.contains("stopped serving") && logged.contains("instantiation median"),
        "{logged}"
    );
}

on_2_1_and_1_7!(
    a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains,
    p3_a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains,
);

fn a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains(version: Version) {
    a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains_of(version, P2);
}

fn p3_a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains(version: Version) {
    a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains_of(version, P3);
}

/// An HTTP demo as a pod through CRI with a CNI network: served on the pod IP at the default
/// address, a probe every 100 ms from readiness to StopContainer never fails, and
/// StopContainer (SIGTERM) lets ten in-flight requests finish before the guest exits 0.
fn a_pod_serves_on_its_ip_probes_never_fail_and_stop_drains_of(version: Version, demo: HttpDemo) {
    let Some(node) = crate::kubernetes::node(version) else {
        return;
    };
    let repository = demo.image.trim_start_matches("localhost/");
    let image = node
        .registry
        .push(&wasmcell_tests::demo_tar(demo.tar), repository)
        .unwrap();
    let sandbox = node.sandbox_config("web", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&image, &sandbox);
    let id = node
        .create(&pod, &sandbox, "web", &image, &[demo.program])
        .unwrap();
    node.start(&id);
    node.wait_running(&id);
    let (ip, netns) = node.pod_network(&pod);
    assert!(!ip.is_empty(), "the pod has no IP");
    let address = format!("{ip}:8080");
    let http = |path: &str| request_to(&address, "GET", path, b"");
    // Readiness: the first 200.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http("/"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the pod never answered on {address}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        http("/").unwrap(),
        (200, "hello from wasmcell\n".to_owned())
    );
    let probing = std::sync::atomic::AtomicBool::new(true);
    let (probes, in_flight) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut results = Vec::new();
            while probing.load(std::sync::atomic::Ordering::SeqCst) {
                results.push(http("/").map(|r| r.0).map_err(|e| e.to_string()));
                std::thread::sleep(Duration::from_millis(100));
            }
            results
        });
        std::thread::sleep(Duration::from_millis(1500));
        let sleepers: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| http("/sleep/2000").map(|r| r.0).map_err(|e| e.to_string())))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // The kubelet's stop: the probes stop with it.
        probing.store(false, std::sync::atomic::Ordering::SeqCst);
        let probes = prober.join().unwrap();
        node.stop_container(&id, 30);
        let in_flight: Vec<_> = sleepers.into_iter().map(|h| h.join().unwrap()).collect();
        (probes, in_flight)
    });
    assert!(probes.len() >= 10, "{probes:?}");
    assert!(
        probes.iter().all(|p| *p == Ok(200)),
        "a probe failed between readiness and stop: {probes:?}"
    );
    assert!(
        in_flight.iter().all(|r| *r == Ok(200)),
        "StopContainer must let in-flight requests finish: {in_flight:?}"
    );
    let status = node.wait_exited(&id);
    assert_eq!(status.exit_code, 0, "a drained server exits 0: {status:?}");
    let lines = crate::kubernetes::cri_log_lines(&node.log_file("web", "web"));
    assert!(
        lines
            .iter()
            .any(|(stream, text)| stream == "stdout" && text == "GET / 200"),
        "each request logs a line: {lines:?}"
    );
    node.stop_and_remove_pod(&pod);
    crate::kubernetes::assert_nothing_left(&node, &[&pod, &id], netns.as_deref());
}

/// A 0.3 server's instances take request after request (by default up to 128, kept 1 s
/// idle); `WASMCELL_HTTP_INSTANCE_REUSE=1` gives every request a fresh one, as 0.2 gets; a
/// zero knob is refused at create.
fn p3_instances_are_reused_as_configured(version: Version) {
    let Some(containerd) = containerd_with_http(version, P3) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    // On one keep-alive connection every request is served by the same worker thread, so by
    // that thread's instances.
    let counts = |port: u16, requests: usize| -> Vec<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (0..requests)
            .map(|_| {
                write!(stream, "GET /instance HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).unwrap();
                let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                let count = reply
                    .split("requests ")
                    .nth(1)
                    .and_then(|rest| rest.trim().parse().ok());
                count.unwrap_or_else(|| panic!("not an /instance answer: {reply:?}"))
            })
            .collect()
    };
    let port = free_port();
    serve(
        &containerd,
        P3,
        "reused",
        port,
        &[],
        &temp.path().join("reused.log"),
    );
    let seen = counts(port, 5);
    assert!(
        seen.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "one instance takes request after request: {seen:?}"
    );
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| request(port, "GET", "/sleep/500", b"").map(|r| r.0)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    eprintln!("ten concurrent 500 ms requests took {took:?}");
    stop(&containerd, "reused");

    let port = free_port();
    serve(
        &containerd,
        P3,
        "fresh",
        port,
        &["--env", "WASMCELL_HTTP_INSTANCE_REUSE=1"],
        &temp.path().join("fresh.log"),
    );
    assert_eq!(counts(port, 3), [1, 1, 1], "a fresh instance per request");
    stop(&containerd, "fresh");

    // A knob that cannot be meant fails the create with its name.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--net-host",
        "--env",
        &format!("WASMCELL_HTTP_ADDR=127.0.0.1:{}", free_port()),
        "--env",
        "WASMCELL_HTTP_INSTANCE_CONCURRENCY=0",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        P3.image,
        "zero",
        P3.program,
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WASMCELL_HTTP_INSTANCE_CONCURRENCY must be at least 1"),
        "{stderr}"
    );
}

/// demo-p3-http's artifact (target `wasi:http/service@0.3.0`, imported with `wasmcell import`,
/// which compiles it ahead) serves like the image; a host policy denying
/// `wasi:http/handler@0.3.0` refuses it at create, naming the export.
fn p3_the_artifact_serves_and_a_deny_policy_refuses_at_create(version: Version) {
    let Some(containerd) = containerd_with_http(version, P3) else {
        return;
    };
    crate::shim::wasmcell_import(
        &containerd,
        &wasmcell_tests::demo_tar("demo-p3-http-artifact.tar"),
    );
    let artifact = "localhost/wasmcell/demo-p3-http-artifact:latest";
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    serve_image(
        &containerd,
        artifact,
        "demo-p3-http",
        "p3-artifact",
        port,
        &[],
        &temp.path().join("artifact.log"),
    );
    assert_eq!(get(port, "/status/204").0, 204);
    stop(&containerd, "p3-artifact");
    let log = containerd.log();
    assert!(
        log.contains("container p3-artifact: program loaded (cache hit;"),
        "{log}"
    );

    let policy = temp.path().join("no-p3-http.toml");
    std::fs::write(&policy, "deny = [\"wasi:http/handler@0.3.0\"]\n").unwrap();
    let policy = policy.display().to_string();
    for (image, program) in [(artifact, "demo-p3-http"), (P3.image, P3.program)] {
        let address = format!("WASMCELL_HTTP_ADDR=127.0.0.1:{}", free_port());
        let out = containerd.ctr(&[
            "run",
            "--rm",
            "--net-host",
            "--env",
            &address,
            "--runtime-config-path",
            &policy,
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip2/wasm",
            image,
            "denied",
            program,
        ]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{image}: {stderr}");
        assert!(
            stderr.contains("(wasi:http/service@0.3.0)")
                && stderr.contains(&format!(
                    "export wasi:http/handler@0.3.0 (this host does not run it: denied by \
                     policy \"wasi:http/handler@0.3.0\" from {policy})"
                )),
            "{image}: {stderr}"
        );
    }
}
