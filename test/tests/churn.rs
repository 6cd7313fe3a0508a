//! Churn and soak: many short containers through `ctr`, many pods through CRI and one pod
//! whose shim serves hundreds of containers in turn, then every trace a container can leave
//! counted against the baseline (the [`footprint`]). The same functions, with big counts and
//! injected faults, are `make soak` ([`soak`], ignored by default), which writes
//! `target/soak/report.md` and `report.json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmcell_tests::containerd::{Containerd, Version};

use crate::kubernetes::{Node, cri_log_lines, node};
use crate::shim::{
    IMAGE, containerd_with_demo, containerd_with_demo_cache, delete_stopped_after_kill,
    detached_demo_args, parent_of, run_demo, run_demo_detached, text, wait_for_compiling_guest,
    wait_for_optimized_code, wait_for_status, walk,
};

on_2_1_and_1_7!(
    containers_churn_without_leaks,
    pods_churn_without_leaks,
    one_shim_serves_a_namespace_through_churn,
    a_namespace_shim_leaves_soon_after_a_claim_it_waited_for,
    an_idle_namespace_shim_stays_for_the_next_container,
);

/// Containers in the CI churn (five at a time).
const CI_CONTAINERS: usize = 150;
/// Pods in the CI churn, one after another.
const CI_PODS: usize = 30;
/// Containers run one after another in the CI's long-lived pod.
const CI_POD_CYCLES: usize = 500;
/// How much a long-lived pod shim's RSS may grow over its container cycles, KiB: what stays
/// per container must be nothing, but the allocator keeps some freed pages.
const POD_SHIM_RSS_SLACK_KIB: u64 = 2048;

/// What a containerd instance holds that containers and pods could leak: shim and guest
/// processes, containerd's open fds, mounts under its state, cgroups below the instance,
/// bundle directories, compile cache temp files and pod IPs held by CNI's IPAM.
pub(crate) fn footprint(containerd: &Containerd) -> BTreeMap<&'static str, usize> {
    let dir = containerd.dir.display().to_string();
    let mut processes = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("containerd-shim-wasmcell-v1") && cmdline.contains(&dir) {
            processes += 1;
        }
    }
    let fds = containerd
        .pid()
        .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map_or(0, |d| d.count());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("{dir}/state")))
        .count();
    // Recursive: CRI nests containers below their pod's cgroup parent.
    let cgroups: usize = ["memory", "cpu", "pids"]
        .iter()
        .map(|c| {
            count_dirs(
                &Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join(&containerd.namespace),
            )
        })
        .sum();
    // Every containerd namespace (`ctr`'s and CRI's `k8s.io`).
    let bundles = std::fs::read_dir(containerd.dir.join("state/io.containerd.runtime.v2.task"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|ns| std::fs::read_dir(ns.path()).map_or(0, |d| d.count()))
        .sum();
    let temp_files = walk(&containerd.cache_dir())
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .count();
    // host-local IPAM keeps one file per allocated address, named by it.
    let pod_ips = walk(&containerd.dir.join("cni-ipam"))
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .count();
    BTreeMap::from([
        ("shim and guest processes", processes),
        ("containerd fds", fds),
        ("mounts", mounts),
        ("cgroups", cgroups),
        ("bundles", bundles),
        ("cache temp files", temp_files),
        ("pod IPs", pod_ips),
    ])
}

fn count_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

/// Waits (up to 30 s, for background cgroup removal and exits) until `containerd`'s
/// [`footprint`] is back to `before` — containerd's fds within a small slack for its own
/// caches — and returns what stayed, one line each (empty when nothing leaked).
pub(crate) fn leaks_since(
    containerd: &Containerd,
    before: &BTreeMap<&'static str, usize>,
) -> Vec<String> {
    let slack = |k: &str| if k == "containerd fds" { 8 } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = footprint(containerd);
        let settled = before.iter().all(|(k, base)| now[k] <= base + slack(k));
        if settled || Instant::now() >= deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    before
        .iter()
        .filter(|(key, base)| after[*key] > *base + slack(key))
        .map(|(key, base)| format!("{key}: {base} before, {} after", after[key]))
        .collect()
}

/// [`leaks_since`], failing with what stayed after `what`.
pub(crate) fn assert_back_to_baseline(
    containerd: &Containerd,
    before: &BTreeMap<&'static str, usize>,
    what: &str,
) {
    let leaks = leaks_since(containerd, before);
    assert!(leaks.is_empty(), "after {what}:\n{}", leaks.join("\n"));
}

/// The VmRSS of a process, in KiB.
pub(crate) fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The pid of this instance's shim serving `id` (`guest: false`; a pod's shim is named by its
/// sandbox id), or of its guest.
pub(crate) fn process_of(containerd: &Containerd, id: &str, guest: bool) -> Option<String> {
    let dir = containerd.dir.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("containerd-shim-wasmcell-v1")
                && cmdline.contains(&dir)
                && cmdline.contains(id)
                && cmdline.contains("__wasmcell-guest") == guest)
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
}

/// Runs `count` echo containers named `{prefix}-N`, `parallel` at a time, each checked for
/// its output.
pub(crate) fn churn_containers(
    containerd: &Containerd,
    prefix: &str,
    count: usize,
    parallel: usize,
) {
    for round in 0..count.div_ceil(parallel) {
        std::thread::scope(|scope| {
            for n in (round * parallel..count).take(parallel) {
                scope.spawn(move || {
                    let id = format!("{prefix}-{n}");
                    let out = run_demo(containerd, IMAGE, &id, &[], &["echo", &id], b"");
                    assert_eq!(
                        text(&out.stdout),
                        format!("{id}\n"),
                        "{}",
                        text(&out.stderr)
                    );
                });
            }
        });
    }
}

/// One container first, so containerd's lazily opened files are part of the baseline.
fn warm_up(containerd: &Containerd) {
    run_demo(containerd, IMAGE, "churn-warm", &[], &["echo", "warm"], b"");
}

fn containers_churn_without_leaks(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    warm_up(&containerd);
    let before = footprint(&containerd);
    churn_containers(&containerd, "churn", CI_CONTAINERS, 5);
    assert_back_to_baseline(&containerd, &before, "150 containers");
}

/// With `group = "namespace"` one shim serves every container of the namespace; it leaves
/// when its last container is gone, while new containers keep arriving (the hand-over), and
/// nothing is left behind.
fn one_shim_serves_a_namespace_through_churn(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    std::fs::write(containerd.shim_config(), "group = \"namespace\"\n").unwrap();
    warm_up(&containerd);
    let before = footprint(&containerd);
    let sleepers = ["ns-a", "ns-b", "ns-c"];
    let guests: Vec<u32> = sleepers
        .iter()
        .map(|id| run_demo_detached(&containerd, id, &["sleep", "60"]))
        .collect();
    let shims: std::collections::BTreeSet<_> = guests.iter().map(|g| parent_of(*g)).collect();
    assert_eq!(shims.len(), 1, "one shim for the namespace: {shims:?}");
    // containerd reads a shim's log through the FIFO of each container it hands the shim, only
    // while that container exists: with the one that started the shim gone, the shim's lines
    // still reach containerd's log.
    delete_stopped_after_kill(&containerd, "ns-a");
    let late = run_demo_detached(&containerd, "ns-late", &["sleep", "60"]);
    assert_eq!(
        Some(&parent_of(late)),
        shims.first(),
        "the namespace's shim serves it"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !containerd.log().contains("container ns-late created") {
        assert!(
            std::time::Instant::now() < deadline,
            "the shim's log stopped with its first container:\n{}",
            containerd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sleepers = ["ns-b", "ns-c", "ns-late"];
    // The shim empties (the sleepers go) while containers keep arriving, three at a time...
    std::thread::scope(|scope| {
        scope.spawn(|| churn_containers(&containerd, "ns-churn", 30, 3));
        scope.spawn(|| {
            for id in sleepers {
                delete_stopped_after_kill(&containerd, id);
            }
        });
    });
    // ... and one at a time, each start meeting the idle shim that waits for it.
    churn_containers(&containerd, "ns-one", 10, 1);
    assert_back_to_baseline(&containerd, &before, "a namespace's shim through churn");
}

/// A namespace's shim that was asked to leave while another container's create was on its
/// way (claimed, still compiling) stays for it — and leaves as soon as that container is gone
/// too, not when the claim would have expired (30 s after it was made).
fn a_namespace_shim_leaves_soon_after_a_claim_it_waited_for(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    std::fs::write(containerd.shim_config(), "group = \"namespace\"\n").unwrap();
    // The first container keeps the shim up while the second one's create compiles: once the
    // first has compiled the program (and its background optimizer is done), the cache is
    // emptied so that the second compiles again.
    let first = run_demo_detached(&containerd, "claim-first", &["sleep", "600"]);
    let shim = parent_of(first).expect("the guest's parent");
    wait_for_optimized_code(&containerd);
    for entry in std::fs::read_dir(containerd.cache_dir()).unwrap().flatten() {
        std::fs::remove_dir_all(entry.path()).unwrap();
    }
    let mut creating = containerd
        .ctr_base()
        .args(detached_demo_args("claim-second", &["sleep", "600"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_compiling_guest(&containerd, "claim-second");
    // The shim is asked to leave while the second container is claimed but not counted.
    delete_stopped_after_kill(&containerd, "claim-first");
    assert!(
        creating.wait().unwrap().success(),
        "the second create completes"
    );
    wait_for_status(&containerd, "claim-second", "RUNNING");
    delete_stopped_after_kill(&containerd, "claim-second");
    assert_shim_leaves(shim);
}

/// An idle namespace shim stays a moment for the next container, so a stream of short tasks
/// keeps one shim — and then leaves.
fn an_idle_namespace_shim_stays_for_the_next_container(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    std::fs::write(containerd.shim_config(), "group = \"namespace\"\n").unwrap();
    let first = run_demo_detached(&containerd, "idle-a", &["sleep", "60"]);
    let shim = parent_of(first).expect("the guest's parent");
    delete_stopped_after_kill(&containerd, "idle-a");
    let next = run_demo_detached(&containerd, "idle-b", &["sleep", "60"]);
    assert_eq!(
        parent_of(next),
        Some(shim),
        "the namespace's idle shim serves the next container"
    );
    delete_stopped_after_kill(&containerd, "idle-b");
    assert_shim_leaves(shim);
}

/// Waits up to 10 s for the namespace's shim `shim`, whose last container is gone, to exit.
fn assert_shim_leaves(shim: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{shim}")).exists() && !is_zombie(shim) {
        assert!(
            Instant::now() < deadline,
            "the namespace's shim {shim} stayed 10 s after its last container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The kubelet's part of a pod's end that no runtime does: removing the pod-level cgroup it
/// created. `rmdir` fails while a container's cgroup is still below it, which
/// [`footprint`] then counts.
pub(crate) fn remove_pod_cgroup(node: &Node, pod_name: &str) {
    for controller in ["memory", "cpu", "pids"] {
        let _ = std::fs::remove_dir(
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(&node.containerd.namespace)
                .join(pod_name),
        );
    }
}

/// Runs `count` pods named `{prefix}-N` one after another, each a sandbox with one echo
/// container run to exit, then stopped and removed as the kubelet does; returns the network
/// namespaces that outlived their pod.
pub(crate) fn churn_pods(node: &Node, prefix: &str, count: usize) -> Vec<String> {
    let mut netns_left = Vec::new();
    for n in 0..count {
        let name = format!("{prefix}-{n}");
        let sandbox = node.sandbox_config(&name, false);
        let pod = node.run_pod(&sandbox);
        let (_, netns) = node.pod_network(&pod);
        let (code, lines) = node.demo_to_exit(&pod, &sandbox, "echo", &["echo", &name]);
        assert_eq!(code, 0, "{name}: {lines:?}");
        assert_eq!(lines, [("stdout".to_owned(), name.clone())]);
        node.stop_and_remove_pod(&pod);
        remove_pod_cgroup(node, &name);
        netns_left.extend(netns.filter(|n| Path::new(n).exists()));
    }
    netns_left
}

/// The shim RSS of a long-lived pod over its container cycles, KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PodShimRss {
    /// After the first 20 containers, once the shim's caches and pools are warm.
    pub warm: u64,
    pub after: u64,
}

/// One pod whose shim runs `cycles` echo containers one after another (create, start, exit,
/// remove, as a CronJob's pod or a crash-looping container would); returns its shim's RSS.
pub(crate) fn cycle_containers_in_one_pod(node: &Node, name: &str, cycles: usize) -> PodShimRss {
    let sandbox = node.sandbox_config(name, false);
    let pod = node.run_pod(&sandbox);
    let shim_rss = || {
        process_of(&node.containerd, &pod, false)
            .and_then(|pid| rss_kib(&pid))
            .unwrap_or_else(|| panic!("no shim for pod {pod}"))
    };
    let mut warm = 0;
    for cycle in 0..cycles {
        let container = format!("cycle-{cycle}");
        let id = node.run_demo(&pod, &sandbox, &container, &["echo", &container]);
        let status = node.wait_exited(&id);
        let lines = cri_log_lines(&node.log_file(name, &container));
        assert_eq!(status.exit_code, 0, "{container}: {lines:?}");
        assert_eq!(lines, [("stdout".to_owned(), container.clone())]);
        node.remove_container(&id);
        if cycle + 1 == 20.min(cycles) {
            warm = shim_rss();
        }
    }
    let after = shim_rss();
    node.stop_and_remove_pod(&pod);
    remove_pod_cgroup(node, name);
    PodShimRss { warm, after }
}

/// A warm pod first (image pulled, CNI's and CRI's lazy state in the baseline).
pub(crate) fn warm_up_node(node: &Node) {
    let sandbox = node.sandbox_config("warm", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let (code, _) = node.demo_to_exit(&pod, &sandbox, "echo", &["echo", "warm"]);
    assert_eq!(code, 0);
    node.stop_and_remove_pod(&pod);
    remove_pod_cgroup(node, "warm");
}

fn pods_churn_without_leaks(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    warm_up_node(&node);
    let before = footprint(&node.containerd);
    let netns_left = churn_pods(&node, "churn", CI_PODS);
    assert!(
        netns_left.is_empty(),
        "network namespaces left: {netns_left:?}"
    );
    assert_back_to_baseline(&node.containerd, &before, "30 pods");

    let rss = cycle_containers_in_one_pod(&node, "long-lived", CI_POD_CYCLES);
    eprintln!("long-lived pod shim RSS: {rss:?} KiB over {CI_POD_CYCLES} containers");
    assert!(
        rss.after <= rss.warm + POD_SHIM_RSS_SLACK_KIB,
        "the pod's shim grew from {} to {} KiB over {CI_POD_CYCLES} containers",
        rss.warm,
        rss.after
    );
    assert_back_to_baseline(&node.containerd, &before, "a pod of 500 containers");
}

/// Deletes the stopped task `id` and its container, checking the exit code `ctr` reports.
fn delete_stopped(containerd: &Containerd, id: &str, code: i32) {
    wait_for_status(containerd, id, "STOPPED");
    let deleted = containerd.ctr(&["task", "delete", id]);
    let said = format!("{}{}", text(&deleted.stdout), text(&deleted.stderr));
    assert!(
        deleted.status.success() && said.contains(&code.to_string()),
        "{id}: expected exit {code}: {said}"
    );
    containerd.ctr_ok(&["container", "delete", id]);
}

fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Whether `pid` has ended (gone, or a zombie waiting for its new parent to reap it).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn wait_ended(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ended(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fault: containerd SIGKILLed and restarted under a running guest, which keeps running (the
/// same pid) and is then stopped and removed through the new daemon, exiting 143.
pub(crate) fn fault_containerd_killed(containerd: &mut Containerd, id: &str) {
    let pid = run_demo_detached(containerd, id, &["sleep", "600"]);
    containerd.crash_and_restart().unwrap();
    assert_eq!(wait_for_status(containerd, id, "RUNNING"), pid);
    containerd.ctr_ok(&["task", "kill", id]);
    delete_stopped(containerd, id, 143);
}

/// Fault: the shim SIGKILLed under its running guest; the guest dies with it and
/// containerd's cleanup removes the task.
fn fault_shim_killed(containerd: &Containerd, id: &str) {
    let guest = run_demo_detached(containerd, id, &["sleep", "600"]);
    let shim = parent_of(guest).expect("the guest's parent");
    sigkill(shim);
    wait_ended(guest, "the guest of a killed shim");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        containerd.ctr(&["task", "delete", "-f", id]);
        let listed = text(&containerd.ctr(&["task", "ls"]).stdout);
        if !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "task {id} stayed:\n{listed}");
        std::thread::sleep(Duration::from_millis(200));
    }
    containerd.ctr_ok(&["container", "delete", id]);
}

/// Fault: the guest SIGKILLed (as the OOM killer would); the task reads 137.
fn fault_guest_killed(containerd: &Containerd, id: &str) {
    sigkill(run_demo_detached(containerd, id, &["sleep", "600"]));
    delete_stopped(containerd, id, 137);
}

/// A pod with one long-running guest, for the pod faults: (sandbox config, pod id, container id).
fn pod_with_sleeper(node: &Node, name: &str) -> (k8s_cri::v1::PodSandboxConfig, String, String) {
    let sandbox = node.sandbox_config(name, false);
    let pod = node.run_pod(&sandbox);
    let id = node.run_demo(&pod, &sandbox, "sleeper", &["sleep", "600"]);
    node.wait_running(&id);
    (sandbox, pod, id)
}

/// Fault: a pod's guest SIGKILLed; CRI reports 137 and the pod is removed as usual.
fn fault_pod_guest_killed(node: &Node, name: &str) {
    let (_, pod, id) = pod_with_sleeper(node, name);
    sigkill(node.container_pid(&id));
    assert_eq!(node.wait_exited(&id).exit_code, 137, "{name}");
    node.stop_and_remove_pod(&pod);
    remove_pod_cgroup(node, name);
}

/// Fault: a pod's shim SIGKILLed under its running guest; the guest dies with it, CRI sees
/// the container exit and the pod is removed as usual.
fn fault_pod_shim_killed(node: &Node, name: &str) {
    let (_, pod, id) = pod_with_sleeper(node, name);
    let guest = node.container_pid(&id);
    let shim = process_of(&node.containerd, &pod, false).expect("the pod's shim");
    sigkill(shim.parse().unwrap());
    wait_ended(guest, "the guest of a pod's killed shim");
    node.wait_exited(&id);
    node.stop_and_remove_pod(&pod);
    remove_pod_cgroup(node, name);
}

fn soak_count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `make soak`: `WASMCELL_SOAK_CONTAINERS` (2,000) containers through `ctr`, five at a time,
/// and `WASMCELL_SOAK_PODS` (200) pods through CRI, each in four batches with faults injected
/// between batches (`ctr`: containerd, a shim and a guest SIGKILLed; CRI: a pod's guest and a
/// pod's shim SIGKILLed), then a pod whose shim runs `WASMCELL_SOAK_POD_CYCLES` (500)
/// containers in turn, on containerd `WASMCELL_SOAK_CONTAINERD` (2.1). Writes
/// `target/soak/report.{md,json}` with the counts, the leaks found and the pod shim's RSS,
/// and fails if anything leaked.
#[test]
#[ignore = "long: `make soak` runs it"]
fn soak() {
    let version = match std::env::var("WASMCELL_SOAK_CONTAINERD").as_deref() {
        Ok("1.7") => Version::V1_7,
        Ok("1.6") => Version::V1_6,
        _ => Version::V2_1,
    };
    let containers = soak_count("WASMCELL_SOAK_CONTAINERS", 2000);
    let pods = soak_count("WASMCELL_SOAK_PODS", 200);
    let cycles = soak_count("WASMCELL_SOAK_POD_CYCLES", 500);
    let started = Instant::now();
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut leaks = Vec::new();

    let Some(mut containerd) = containerd_with_demo(version) else {
        return;
    };
    warm_up(&containerd);
    let ctr_before = footprint(&containerd);
    for batch in 0..4 {
        let size = containers / 4 + usize::from(batch < containers % 4);
        churn_containers(&containerd, &format!("soak-{batch}"), size, 5);
        fault_containerd_killed(&mut containerd, &format!("fault-containerd-{batch}"));
        fault_shim_killed(&containerd, &format!("fault-shim-{batch}"));
        fault_guest_killed(&containerd, &format!("fault-guest-{batch}"));
        for kind in ["containerd SIGKILL", "shim SIGKILL", "guest SIGKILL"] {
            *faults.entry(kind).or_default() += 1;
        }
    }
    leaks.extend(
        leaks_since(&containerd, &ctr_before)
            .into_iter()
            .map(|l| format!("ctr: {l}")),
    );
    let ctr_after = footprint(&containerd);
    let ctr_seconds = started.elapsed().as_secs_f64();
    drop(containerd);

    let Some(node) = node(version) else {
        return;
    };
    warm_up_node(&node);
    let cri_before = footprint(&node.containerd);
    let mut netns_left = Vec::new();
    for batch in 0..4 {
        let size = pods / 4 + usize::from(batch < pods % 4);
        netns_left.extend(churn_pods(&node, &format!("soak-{batch}"), size));
        fault_pod_guest_killed(&node, &format!("fault-guest-{batch}"));
        fault_pod_shim_killed(&node, &format!("fault-shim-{batch}"));
        for kind in ["pod guest SIGKILL", "pod shim SIGKILL"] {
            *faults.entry(kind).or_default() += 1;
        }
    }
    let rss = cycle_containers_in_one_pod(&node, "soak-long-lived", cycles);
    leaks.extend(
        netns_left
            .iter()
            .map(|n| format!("CRI: network namespace {n}")),
    );
    leaks.extend(
        leaks_since(&node.containerd, &cri_before)
            .into_iter()
            .map(|l| format!("CRI: {l}")),
    );
    if rss.after > rss.warm + POD_SHIM_RSS_SLACK_KIB {
        leaks.push(format!(
            "CRI: the long-lived pod's shim grew from {} to {} KiB",
            rss.warm, rss.after
        ));
    }
    let cri_after = footprint(&node.containerd);
    let seconds = started.elapsed().as_secs_f64();

    let report = serde_json::json!({
        "containerd": version.as_str(),
        "containers": containers,
        "pods": pods,
        "pod_container_cycles": cycles,
        "faults": faults,
        "faults_total": faults.values().sum::<usize>(),
        "leaks": leaks.len(),
        "leak_details": leaks,
        "pod_shim_rss_kib_warm": rss.warm,
        "pod_shim_rss_kib_after": rss.after,
        "footprint_ctr_before": ctr_before,
        "footprint_ctr_after": ctr_after,
        "footprint_cri_before": cri_before,
        "footprint_cri_after": cri_after,
        "ctr_phase_seconds": ctr_seconds,
        "seconds": seconds,
    });
    let dir = wasmcell_tests::target_dir().join("soak");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .unwrap();
    let mut md = format!(
        "# wasmcell soak, containerd {}\n\n\
         | what | figure |\n|---|---|\n\
         | containers churned through ctr (5 at a time) | {containers} |\n\
         | pods churned through CRI | {pods} |\n\
         | containers cycled through one long-lived pod | {cycles} |\n\
         | faults injected | {} |\n\
         | leaks found | {} |\n\
         | long-lived pod shim RSS, after 20 containers → after {cycles} | {} → {} KiB |\n\
         | duration | {:.0} s (ctr phase {:.0} s) |\n\n## Faults\n\n",
        version.as_str(),
        faults.values().sum::<usize>(),
        leaks.len(),
        rss.warm,
        rss.after,
        seconds,
        ctr_seconds,
    );
    for (kind, n) in &faults {
        md += &format!("- {kind}: {n}\n");
    }
    md += "\n## Footprint (before → after)\n\n| | ctr | CRI |\n|---|---|---|\n";
    for key in ctr_before.keys() {
        md += &format!(
            "| {key} | {} → {} | {} → {} |\n",
            ctr_before[key], ctr_after[key], cri_before[key], cri_after[key]
        );
    }
    md += "\n## Leaks\n\n";
    if leaks.is_empty() {
        md += "none\n";
    }
    for leak in &leaks {
        md += &format!("- {leak}\n");
    }
    std::fs::write(dir.join("report.md"), &md).unwrap();
    eprintln!("{md}");
    assert!(leaks.is_empty(), "soak found leaks:\n{}", leaks.join("\n"));
}
