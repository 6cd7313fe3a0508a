//! Faults from outside the shim: containerd SIGKILLed and restarted under a running task and
//! in the middle of a create, a kill sent while a create compiles, and a guest flooding its
//! stdio into a slow reader.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use wasmcell_tests::containerd::{Containerd, Version};

use crate::churn::{
    assert_back_to_baseline, fault_containerd_killed, footprint, process_of, rss_kib,
};
use crate::shim::{
    IMAGE, RUNTIME, containerd_with_demo, containerd_with_demo_cache, detached_demo_args, run_demo,
    text, wait_for_compiling_guest, wait_for_status,
};

on_2_1_and_1_7!(
    containerd_killed_under_a_running_task_and_during_create,
    a_kill_sent_while_create_compiles_waits_for_the_task,
    a_flooding_guest_with_a_slow_reader_keeps_the_shim_flat,
);

fn ctr_run_detached(containerd: &Containerd, id: &str, args: &[&str]) -> std::process::Child {
    containerd
        .ctr_base()
        .args(detached_demo_args(id, args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Removes task `id` (killing it first if it runs) and its container, whatever state a crash
/// left them in; returns what `ctr task ls` said of it first.
fn remove_whatever_is_left(containerd: &Containerd, id: &str) -> Option<String> {
    let listed = text(&containerd.ctr(&["task", "ls"]).stdout);
    let line = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(str::to_owned);
    if line.is_some() {
        let _ = containerd.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["task", "delete", id]).status.success() {
            assert!(Instant::now() < deadline, "task {id} cannot be deleted");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = containerd.ctr(&["container", "delete", id]);
    line
}

/// containerd SIGKILLed (no clean shutdown) twice: while a guest runs, which must keep running
/// and stay manageable by the restarted daemon, and while a create is compiling, after which
/// whatever containerd recovered can be removed, the id reused and nothing is left.
fn containerd_killed_under_a_running_task_and_during_create(version: Version) {
    let Some(mut containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    // Nothing runs yet. containerd's own fds are not compared: the restarted daemon is a new
    // process.
    let mut before = footprint(&containerd);
    before.remove("containerd fds");

    let mut creating = ctr_run_detached(&containerd, "crash-create", &["sleep", "600"]);
    wait_for_compiling_guest(&containerd, "crash-create");
    containerd.crash_and_restart().unwrap();
    let _ = creating.wait();
    let recovered = remove_whatever_is_left(&containerd, "crash-create");
    eprintln!("after a crash during create, containerd showed: {recovered:?}");
    let out = run_demo(
        &containerd,
        IMAGE,
        "crash-create",
        &[],
        &["echo", "reused"],
        b"",
    );
    assert_eq!(text(&out.stdout), "reused\n", "{}", text(&out.stderr));

    fault_containerd_killed(&mut containerd, "crash-run");

    assert_back_to_baseline(&containerd, &before, "two containerd crashes");
}

/// containerd knows a task only once the shim answered `create`, so a kill sent while the
/// guest compiles is refused as "not found" by containerd itself; the create then completes
/// and the task can be killed as usual.
fn a_kill_sent_while_create_compiles_waits_for_the_task(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    let mut creating = ctr_run_detached(&containerd, "kill-early", &["sleep", "600"]);
    wait_for_compiling_guest(&containerd, "kill-early");
    let early = containerd.ctr(&["task", "kill", "--signal", "SIGKILL", "kill-early"]);
    let said = format!("{}{}", text(&early.stdout), text(&early.stderr));
    assert!(
        !early.status.success() && said.contains("not found"),
        "a kill before the task exists: {said}"
    );
    let created = creating.wait().unwrap();
    assert!(
        created.success(),
        "the create completes after the early kill"
    );
    wait_for_status(&containerd, "kill-early", "RUNNING");
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "kill-early"]);
    wait_for_status(&containerd, "kill-early", "STOPPED");
    let deleted = containerd.ctr(&["task", "delete", "kill-early"]);
    let said = format!("{}{}", text(&deleted.stdout), text(&deleted.stderr));
    assert!(said.contains("137"), "SIGKILL reads as 137: {said}");
    containerd.ctr_ok(&["container", "delete", "kill-early"]);
}

/// Flood size per stream, MiB; the demo writes 64-byte numbered lines.
const FLOOD_MIB: u64 = 32;

/// A guest writing 32 MiB to each of stdout and stderr while `ctr`'s reader drains them
/// slowly: the guest's writes wait on the full FIFO, every byte arrives in order, and neither
/// the shim nor the guest grows (the shim holds no output buffer: the guest writes into
/// containerd's FIFOs itself).
fn a_flooding_guest_with_a_slow_reader_keeps_the_shim_flat(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let mut child = containerd.ctr_command_piped(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "flood",
        "/demo-app.wasm",
        "flood",
        &FLOOD_MIB.to_string(),
    ]);
    drop(child.stdin.take());
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let slow_read = |source: &mut dyn Read, mut sample: Box<dyn FnMut(u64) + '_>| -> Vec<u8> {
        let mut last_line = Vec::new();
        let (mut total, mut lines, mut buf) = (0u64, 0u64, vec![0u8; 16 * 1024]);
        loop {
            let n = source.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\n' {
                    lines += 1;
                    last_line.clear();
                } else {
                    last_line.push(b);
                }
            }
            total += n as u64;
            sample(total);
            std::thread::sleep(Duration::from_millis(1));
        }
        format!("{total} {lines}").into_bytes()
    };
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let (out_summary, err_summary) = std::thread::scope(|scope| {
        let err = scope.spawn(|| slow_read(&mut stderr, Box::new(|_| {})));
        let mut next = 1u64 << 20;
        let mut paused = false;
        let out = slow_read(
            &mut stdout,
            Box::new(|total| {
                // Close to the end, stop reading for a while: the guest finishes and exits
                // with its last lines still in the FIFO, which is where a client that closes
                // its FIFOs at the exit event loses them. The pause is shorter than the
                // shim's drain stall, so the reader is still "reading".
                if !paused && total + (100 << 10) >= FLOOD_MIB << 20 {
                    paused = true;
                    std::thread::sleep(Duration::from_millis(300));
                }
                if total >= next {
                    next += 2 << 20;
                    let shim = process_of(&containerd, "flood", false).and_then(|p| rss_kib(&p));
                    let guest = process_of(&containerd, "flood", true).and_then(|p| rss_kib(&p));
                    if let (Some(shim), Some(guest)) = (shim, guest) {
                        samples.push((total, shim, guest));
                    }
                }
            }),
        );
        (out, err.join().unwrap())
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "ctr run of the flood: {status}");
    // ctr (1.7 and later) closes its FIFOs when it deletes the exited task; the shim reports
    // the exit only once the reader has taken what the guest left in them, so every byte
    // arrives on every version.
    for (stream, summary) in [("stdout", &out_summary), ("stderr", &err_summary)] {
        let summary = text(summary);
        let (bytes, lines) = summary.split_once(' ').unwrap();
        let (bytes, lines): (u64, u64) = (bytes.parse().unwrap(), lines.parse().unwrap());
        let flooded = FLOOD_MIB << 20;
        assert!(
            bytes == flooded && lines == bytes / 64,
            "{stream}: {bytes} bytes in {lines} lines, {flooded} bytes in 64-byte lines sent"
        );
    }
    assert!(samples.len() >= 8, "too few samples: {samples:?}");
    // The first sample is taken once output flows, so both processes are fully set up.
    let (_, shim_first, guest_first) = samples[0];
    let shim_max = samples.iter().map(|s| s.1).max().unwrap();
    let guest_max = samples.iter().map(|s| s.2).max().unwrap();
    eprintln!(
        "flood: shim RSS {shim_first}..{shim_max} KiB, guest RSS {guest_first}..{guest_max} KiB"
    );
    assert!(
        shim_max <= shim_first + 1024,
        "the shim grew by more than 1 MiB while relaying a flood: {samples:?}"
    );
    assert!(
        guest_max <= guest_first + 4096,
        "the guest grew by more than 4 MiB while its reader was slow: {samples:?}"
    );
}
