//! The second wall: a guest process is confined as runc confines a container. Compared with
//! runc itself where it can be (the same `ctr run` flags, read from `/proc/PID/status`), and
//! probed from inside by the escape drill (a debug-build-only native program that runs with
//! exactly a guest's confinement).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::image::{Entry, write_platform_image_tar};
use wasmcell_tests::skip_or_fail;

use wasmcell_tests::DEMO_IMAGES;

use crate::shim::{
    IMAGE, RUNTIME, containerd_with_demo, containerd_with_demo_images, new_starter, run_argv,
    run_demo, text, wait_for_status,
};

/// `--cap-drop` for each of containerd's default capabilities (ctr has no `ALL`).
const DROP_ALL: [&str; 28] = [
    "--cap-drop",
    "CAP_CHOWN",
    "--cap-drop",
    "CAP_DAC_OVERRIDE",
    "--cap-drop",
    "CAP_FSETID",
    "--cap-drop",
    "CAP_FOWNER",
    "--cap-drop",
    "CAP_MKNOD",
    "--cap-drop",
    "CAP_NET_RAW",
    "--cap-drop",
    "CAP_SETGID",
    "--cap-drop",
    "CAP_SETUID",
    "--cap-drop",
    "CAP_SETFCAP",
    "--cap-drop",
    "CAP_SETPCAP",
    "--cap-drop",
    "CAP_NET_BIND_SERVICE",
    "--cap-drop",
    "CAP_SYS_CHROOT",
    "--cap-drop",
    "CAP_KILL",
    "--cap-drop",
    "CAP_AUDIT_WRITE",
];

const NATIVE_IMAGE: &str = "localhost/wasmcell/native-sleep:latest";

on_2_1_and_1_7!(
    a_guests_credentials_match_runcs,
    binds_keep_owners_single_files_and_read_only_flags,
    procfs_and_sysfs_never_reach_a_guest,
    device_nodes_never_open_for_a_guest,
    the_escape_drill_fails_at_everything,
    guests_without_a_network_share_one_empty_namespace,
    a_used_network_namespace_goes_to_the_next_guest_that_may_have_it,
);

/// containerd 1.6 runs the classic image: the same comparison there.
#[test]
fn a_guests_credentials_match_runcs_on_1_6() {
    a_guests_credentials_match_runcs(Version::V1_6);
}

/// `/proc/PID/status` fields that say who a process is and what it may do.
const STATUS_FIELDS: [&str; 11] = [
    "Umask",
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
];

fn status(pid: u32) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| STATUS_FIELDS.contains(k))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// Imports a native static `sleep` (bench/sleep.c) for runc, or skips without a C compiler.
fn import_native_sleep(containerd: &Containerd) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("sleep");
    let source = wasmcell_tests::workspace_root().join("bench/sleep.c");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        return false;
    }
    let tar = dir.path().join("native.tar");
    write_platform_image_tar(
        &tar,
        NATIVE_IMAGE,
        ("amd64", "linux"),
        &[("sleep", Entry::File(std::fs::read(&binary).unwrap(), 0o755))],
    );
    containerd.ctr_ok(&["image", "import", tar.to_str().unwrap()]);
    true
}

/// Starts `id` detached with `flags`, under runc (native sleep) or wasmcell (demo sleep).
fn start_sleeper(containerd: &Containerd, id: &str, wasm: bool, flags: &[&str]) -> u32 {
    let mut args = vec!["run", "-d"];
    args.extend(flags);
    if wasm {
        args.extend([
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip2/wasm",
            IMAGE,
            id,
            "/demo-app.wasm",
            "sleep",
            "120",
        ]);
    } else {
        args.extend([NATIVE_IMAGE, id, "/sleep", "120"]);
    }
    containerd.ctr_ok(&args);
    wait_for_status(containerd, id, "RUNNING")
}

fn remove(containerd: &Containerd, id: &str) {
    containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_for_status(containerd, id, "STOPPED");
    containerd.ctr(&["task", "delete", id]);
    containerd.ctr(&["container", "delete", id]);
}

fn namespace(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

fn a_guests_credentials_match_runcs(version: Version) {
    // 1.6 unpacks only tar layers: the classic image alone.
    let images = if matches!(version, Version::V1_6) {
        &DEMO_IMAGES[..1]
    } else {
        &DEMO_IMAGES[..2]
    };
    let Some(containerd) = containerd_with_demo_images(version, images, false) else {
        return;
    };
    if !import_native_sleep(&containerd) {
        skip_or_fail!("gcc -static is needed to build the native image runc compares against");
    }
    let cases: [&[&str]; 5] = [
        &[],
        &["--user", "1000:1000"],
        &DROP_ALL,
        &["--seccomp"],
        &["--user", "1000:1000", "--seccomp"],
    ];
    for (n, flags) in cases.iter().enumerate() {
        if matches!(version, Version::V1_6) && flags.contains(&"--user") {
            continue; // ctr 1.6 has no --user
        }
        let runc_pid = start_sleeper(&containerd, &format!("runc-{n}"), false, flags);
        let guest_pid = start_sleeper(&containerd, &format!("guest-{n}"), true, flags);
        let mut runc = status(runc_pid);
        let mut guest = status(guest_pid);
        assert_eq!(
            guest.remove("Seccomp").as_deref(),
            Some("2"),
            "{flags:?}: every guest has a seccomp filter (the spec's or wasmcell's default)"
        );
        if flags.contains(&"--seccomp") {
            assert_eq!(runc.get("Seccomp").map(String::as_str), Some("2"));
        }
        runc.remove("Seccomp");
        assert_eq!(
            guest, runc,
            "{flags:?}: the guest's credentials differ from runc's"
        );
        assert_eq!(guest["NoNewPrivs"], "1", "{flags:?}");
        if flags.contains(&"--user") {
            assert_eq!(guest["Uid"], "1000 1000 1000 1000", "{flags:?}");
            assert_eq!(guest["Gid"], "1000 1000 1000 1000", "{flags:?}");
        }
        if flags.contains(&"--user") || flags.len() == DROP_ALL.len() {
            assert_eq!(guest["CapEff"], "0000000000000000", "{flags:?}");
        }
        let guest_pid = guest_pid.to_string();
        for kind in ["mnt", "pid", "ipc", "uts", "net"] {
            let own = namespace(&guest_pid, kind);
            assert!(!own.is_empty(), "{kind} namespace of the guest unreadable");
            assert_ne!(
                own,
                namespace("self", kind),
                "{flags:?}: the guest shares the host's {kind} namespace"
            );
        }
        remove(&containerd, &format!("runc-{n}"));
        remove(&containerd, &format!("guest-{n}"));
    }
}

fn binds_keep_owners_single_files_and_read_only_flags(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let greeting = host.path().join("greeting");
    std::fs::write(&greeting, "hello from one file\n").unwrap();
    let settings = host.path().join("settings");
    std::fs::write(&settings, "old").unwrap();
    let dir_rw = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.display()
    );
    let file_ro = format!(
        "type=bind,src={},dst=/etc/greeting,options=rbind:ro",
        greeting.display()
    );
    let file_rw = format!(
        "type=bind,src={},dst=/settings,options=rbind:rw",
        settings.display()
    );

    let user = ["--user", "1000:1000", "--mount", dir_rw.as_str()];
    let out = run_demo(
        &containerd,
        IMAGE,
        "owner",
        &user,
        &["write", "/data/by-user", "x"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let meta = std::fs::metadata(data.join("by-user")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1000),
        "written as the spec's user"
    );

    let out = run_demo(
        &containerd,
        IMAGE,
        "file-ro",
        &["--mount", &file_ro],
        &["cat", "/etc/greeting"],
        b"",
    );
    assert_eq!(
        text(&out.stdout),
        "hello from one file\n",
        "{}",
        text(&out.stderr)
    );
    let out = run_demo(
        &containerd,
        IMAGE,
        "file-ro-write",
        &["--mount", &file_ro],
        &["write", "/etc/greeting", "changed"],
        b"",
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a read-only file mount refuses writes"
    );
    assert_eq!(
        std::fs::read_to_string(&greeting).unwrap(),
        "hello from one file\n"
    );

    let out = run_demo(
        &containerd,
        IMAGE,
        "file-rw-write",
        &["--mount", &file_rw],
        &["write", "/settings", "new"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), "new");

    let out = run_demo(
        &containerd,
        IMAGE,
        "ro-root",
        &["--read-only"],
        &["write", "/note", "x"],
        b"",
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "--read-only refuses writes to the root"
    );
    let stderr = text(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("not permitted") || stderr.contains("read-only"),
        "{}",
        text(&out.stderr)
    );
}

fn procfs_and_sysfs_never_reach_a_guest(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    // ctr's default spec mounts proc at /proc and sysfs at /sys: neither is made.
    for path in [
        "/proc/self/maps",
        "/proc/self/mem",
        "/proc/1/environ",
        "/sys/kernel/notes",
    ] {
        let out = run_demo(&containerd, IMAGE, "proc-read", &[], &["cat", path], b"");
        assert_ne!(
            out.status.code(),
            Some(0),
            "{path} was readable: {}",
            text(&out.stdout)
        );
    }
    let out = run_demo(&containerd, IMAGE, "proc-ls", &[], &["ls", "/proc"], b"");
    assert_ne!(
        out.status.code(),
        Some(0),
        "/proc exists: {}",
        text(&out.stdout)
    );

    for (source, filesystem) in [
        ("/proc", "procfs"),
        ("/sys", "sysfs"),
        ("/proc/self", "procfs"),
    ] {
        let mount = format!("type=bind,src={source},dst=/host,options=rbind:ro");
        let out = run_demo(
            &containerd,
            IMAGE,
            "proc-bind",
            &["--mount", &mount],
            &["ls", "/host"],
            b"",
        );
        assert_ne!(out.status.code(), Some(0), "a bind of {source} ran");
        let message = format!("mount {source} -> /host: the source is on {filesystem}");
        assert!(
            text(&out.stderr).contains(&message),
            "the refusal names the rule ({message}):\n{}",
            text(&out.stderr)
        );
    }
}

/// A device node a guest can reach — one an image's layer carries (containerd, unpacking as
/// root, creates it), or one inside a bound directory — does not open: every mount of a
/// guest's tree is `nodev`, as wasm guests use no devices. Without that, an image could ship
/// the node of the host's disk and read it through WASI.
fn device_nodes_never_open_for_a_guest(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let tar = temp.path().join("devices.tar");
    let name = "localhost/test/devices:latest";
    write_platform_image_tar(
        &tar,
        name,
        ("wasm", "wasip2"),
        &[
            (
                "app.wasm",
                Entry::File(wasmcell_tests::demo_component(), 0o755),
            ),
            ("plain.txt", Entry::File(b"plain file".to_vec(), 0o644)),
            // The node of /dev/null (1:3): opening it is harmless where it is allowed.
            ("null-node", Entry::CharDevice(1, 3)),
        ],
    );
    containerd.ctr_ok(&["image", "import", "--all-platforms", tar.to_str().unwrap()]);
    let bound = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("mknod")
        .arg(bound.path().join("null-node"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod in {}", bound.path().display());
    let mount = format!(
        "type=bind,src={},dst=/bound,options=rbind:rw",
        bound.path().display()
    );
    let run = |id: &str, args: &[&str]| {
        let mut argv = vec!["/app.wasm"];
        argv.extend(args);
        run_argv(&containerd, name, id, &["--mount", &mount], &argv, b"")
    };
    let out = run("devices-plain", &["cat", "/plain.txt"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "plain file");
    for node in ["/null-node", "/bound/null-node"] {
        let out = run("devices-node", &["cat", node]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{node} opened: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).to_lowercase().contains("denied"),
            "{node}: {}",
            text(&out.stderr)
        );
    }
}

/// Runs the drill in a guest started with `flags`; returns its output.
fn drill(containerd: &Containerd, id: &str, flags: &[&str], setting: &str) -> String {
    let env = format!("WASMCELL_ESCAPE_DRILL={setting}");
    let mut extra = vec!["--env", env.as_str()];
    extra.extend(flags);
    let out = run_demo(
        containerd,
        IMAGE,
        id,
        &extra,
        &["echo", "the drill runs instead"],
        b"",
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{flags:?}: the drill escaped (its exit code counts escapes):\n{stdout}\n{}",
        text(&out.stderr)
    );
    stdout
}

/// What the drill must leave alone on the host: a secret file in a directory, a process, a
/// loopback listener.
struct DrillTargets {
    host: tempfile::TempDir,
    secret: std::path::PathBuf,
    target: std::process::Child,
    _listener: std::net::TcpListener,
    /// `WASMCELL_ESCAPE_DRILL`'s value.
    setting: String,
}

impl DrillTargets {
    fn new() -> DrillTargets {
        let host = tempfile::tempdir().unwrap();
        let secret = host.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        let target = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let setting = format!(
            "secret={};dir={};pid={};port={}",
            secret.display(),
            host.path().display(),
            target.id(),
            listener.local_addr().unwrap().port()
        );
        DrillTargets {
            host,
            secret,
            target,
            _listener: listener,
            setting,
        }
    }

    /// The process still runs (then is stopped), nothing was written next to the secret.
    fn assert_untouched(mut self) {
        assert!(
            self.target.try_wait().unwrap().is_none(),
            "the host process the drill signalled must still run"
        );
        let _ = self.target.kill();
        let _ = self.target.wait();
        let left: Vec<_> = std::fs::read_dir(self.host.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            [std::ffi::OsString::from("secret")],
            "nothing written outside the rootfs"
        );
        assert!(self.secret.is_file());
    }
}

fn the_escape_drill_fails_at_everything(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let targets = DrillTargets::new();
    let setting = &targets.setting;
    let attempts = [
        "read /etc/shadow",
        "read ",
        "write outside the rootfs",
        "list host processes",
        "signal a host process",
        "ptrace a host process",
        "mount",
        "unshare user namespace",
        "unshare mount namespace",
        "setns",
        "load a kernel module (init_module)",
        "load a kernel module (finit_module)",
        "raw IP socket",
        "packet socket",
        "chroot escape",
        "fchdir escape",
        "reach the host's loopback",
        "change its network namespace (loopback up)",
    ];
    let cases: [&[&str]; 3] = [
        &[],
        &["--user", "1000:1000"],
        &["--user", "1000:1000", "--seccomp"],
    ];
    for (n, flags) in cases.iter().enumerate() {
        let out = drill(&containerd, &format!("drill-{n}"), flags, setting);
        for attempt in attempts {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("blocked {attempt}"))),
                "{flags:?}: no 'blocked {attempt}' line:\n{out}"
            );
        }
        if flags.contains(&"--user") {
            assert!(out.contains("blocked setuid(0)"), "{flags:?}:\n{out}");
        }
        assert!(!out.contains("ESCAPED"), "{flags:?}:\n{out}");
    }
    targets.assert_untouched();
}

/// A preview 1 module that sleeps two minutes (`poll_oneoff` on the monotonic clock) and
/// imports nothing that reaches a network.
const NAP_MODULE: &str = r#"(module
    (import "wasi_snapshot_preview1" "poll_oneoff"
        (func $poll (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 16) "\01")
    (func (export "_start")
        (i64.store (i32.const 24) (i64.const 120000000000))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// Guests whose programs import no network interface, launched from a starter's server, share
/// the starter's empty network namespace instead of each paying for one; the demo, which
/// imports `wasi:sockets`, still gets one of its own; neither is the host's. In the shared one
/// a guest can make no socket at all (the drill's extra probe), so none can change it or reach
/// another.
fn guests_without_a_network_share_one_empty_namespace(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nap = crate::validation::classic_image(&containerd, dir.path(), "nap", NAP_MODULE);
    // The first server is spawned by the front and forks the starter; later ones are forked.
    let out = run_demo(&containerd, IMAGE, "warm", &[], &["echo", "warm"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    new_starter(&containerd, None);
    let start_nap = |id: &str| {
        containerd.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip1/wasm",
            &nap,
            id,
            "/nap.wasm",
        ]);
        wait_for_status(&containerd, id, "RUNNING").to_string()
    };
    let (first, second) = (start_nap("nap-1"), start_nap("nap-2"));
    let demo = start_sleeper(&containerd, "demo", true, &[]).to_string();
    let host = namespace("self", "net");
    let shared = namespace(&first, "net");
    assert!(
        !shared.is_empty() && shared != host,
        "{shared} vs the host's {host}"
    );
    assert_eq!(
        namespace(&second, "net"),
        shared,
        "the second nap has a namespace of its own"
    );
    let own = namespace(&demo, "net");
    assert!(
        !own.is_empty() && own != shared && own != host,
        "the demo imports wasi:sockets and must have a namespace of its own: {own}"
    );
    let log = containerd.log();
    for (id, joined) in [("nap-1", true), ("nap-2", true), ("demo", false)] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("container {id}: program loaded (")))
            .unwrap_or_else(|| panic!("no load outcome for {id}"));
        assert_eq!(
            line.contains("in the shared empty network namespace"),
            joined,
            "{id}: {line}"
        );
    }
    for id in ["nap-1", "nap-2", "demo"] {
        remove(&containerd, id);
    }

    // The drill, run in place of the nap, with the nap's confinement.
    let targets = DrillTargets::new();
    let env = format!("WASMCELL_ESCAPE_DRILL={}", targets.setting);
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip1/wasm",
        "--env",
        &env,
        &nap,
        "nap-drill",
        "/nap.wasm",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the drill escaped:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(
            "blocked a socket in the shared empty network namespace: Operation not permitted"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("blocked reach the host's loopback"),
        "{stdout}"
    );
    assert!(!stdout.contains("ESCAPED"), "{stdout}");
    targets.assert_untouched();
}

/// The interfaces `pid`'s network namespace has, as its `/proc/PID/net/dev` lists them.
fn interfaces(pid: &str) -> Vec<String> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// A guest that needs a network namespace of its own (the demo imports `wasi:sockets`) and
/// could change nothing in it leaves it to the starter when it is reaped, and the next such
/// guest is given it instead of a new one — showing only the loopback, as a new one would. A
/// guest with `CAP_NET_ADMIN` neither gets a used namespace nor gives its own back.
fn a_used_network_namespace_goes_to_the_next_guest_that_may_have_it(version: Version) {
    let Some(mut containerd) = containerd_with_demo(version) else {
        return;
    };
    let out = run_demo(&containerd, IMAGE, "warm", &[], &["echo", "warm"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    new_starter(&containerd, None);
    let host = namespace("self", "net");

    let first = start_sleeper(&containerd, "used-1", true, &[]).to_string();
    let used = namespace(&first, "net");
    assert!(
        !used.is_empty() && used != host,
        "{used} vs the host's {host}"
    );
    // Held, the namespace stays alive, so no new one can be given its inode number.
    let _held = std::fs::File::open(format!("/proc/{first}/ns/net")).unwrap();
    remove(&containerd, "used-1");

    let second = start_sleeper(&containerd, "used-2", true, &[]).to_string();
    assert_eq!(
        namespace(&second, "net"),
        used,
        "the second guest was not given the first one's namespace"
    );
    assert_eq!(interfaces(&second), ["lo"]);
    remove(&containerd, "used-2");

    // The pool holds `used`; a guest that could reconfigure a namespace gets a new one, and
    // its own is not kept: the pool lends the last one it took, so the next guest gets `used`.
    let admin =
        start_sleeper(&containerd, "admin", true, &["--cap-add", "CAP_NET_ADMIN"]).to_string();
    let admins = namespace(&admin, "net");
    assert!(
        admins != used && admins != host,
        "a guest with CAP_NET_ADMIN was given {admins} (used: {used})"
    );
    remove(&containerd, "admin");
    let third = start_sleeper(&containerd, "used-3", true, &[]).to_string();
    assert_eq!(
        namespace(&third, "net"),
        used,
        "the guest with CAP_NET_ADMIN gave its namespace back"
    );
    // None spare while the third runs: a fourth gets a new one.
    let fourth = start_sleeper(&containerd, "used-4", true, &[]).to_string();
    let fourths = namespace(&fourth, "net");
    assert!(fourths != used && fourths != host, "{fourths}");
    for id in ["used-3", "used-4"] {
        remove(&containerd, id);
    }

    // Turned off, a guest's namespace is not kept for the next.
    containerd
        .restart_with_env("WASMCELL_NETWORK_REUSE", "off")
        .expect("containerd restarts");
    let fifth = start_sleeper(&containerd, "used-5", true, &[]).to_string();
    let fifths = namespace(&fifth, "net");
    let _held = std::fs::File::open(format!("/proc/{fifth}/ns/net")).unwrap();
    assert!(fifths != used && fifths != host, "{fifths}");
    remove(&containerd, "used-5");
    let sixth = start_sleeper(&containerd, "used-6", true, &[]).to_string();
    let sixths = namespace(&sixth, "net");
    assert!(
        sixths != fifths && sixths != used && sixths != host,
        "with reuse off the sixth guest was given {sixths} (fifth: {fifths}, used: {used})"
    );
    remove(&containerd, "used-6");
}
