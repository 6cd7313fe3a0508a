//! Private containerd instances: own root, state, sockets and `opt` dir in a temp directory,
//! NRI off and CRI off unless a test asks for it (then with a private CNI bridge, a private
//! registry mirror configuration and pod cgroups under the instance's namespace name), never
//! touching a system containerd. Dropping the handle stops the daemon,
//! unmounts anything left under its directory and removes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::in_ci;

/// A containerd release line the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// containerd 2.1 (Debian sid).
    V2_1,
    /// containerd 1.7 (Debian trixie).
    V1_7,
    /// containerd 1.6 (Debian bookworm).
    V1_6,
}

impl Version {
    /// The argument `test/fetch-debian.sh` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2_1 => "2.1",
            Version::V1_7 => "1.7",
            Version::V1_6 => "1.6",
        }
    }
}

/// Directory holding `usr/bin/containerd` and `usr/bin/ctr` for `version`, fetching it (into
/// the user cache, via `test/fetch-debian.sh`) when needed. `Err` explains why not.
pub fn binaries(version: Version) -> Result<PathBuf, String> {
    crate::fetch_debian(version.as_str())
}

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    /// Which release line.
    pub version: Version,
    /// Its temp directory (root, state, sockets, log).
    pub dir: PathBuf,
    /// The containerd namespace every `ctr` call uses: unique per instance, because the
    /// cgroup paths `ctr` asks for (`/NAMESPACE/ID`) are host-wide.
    pub namespace: String,
    bin: PathBuf,
    cache: PathBuf,
    /// The CNI bridge created for CRI pods, removed on drop.
    bridge: Option<String>,
    /// Environment variables given to the daemon (and so to its shims) besides the usual.
    env: Vec<(String, String)>,
    child: Option<Child>,
    _temp: tempfile::TempDir,
}

/// Starts a private containerd of `version`, or skips the test (fails it under CI).
#[macro_export]
macro_rules! containerd_or_skip {
    ($version:expr) => {
        match $crate::containerd::Containerd::start($version) {
            Ok(c) => c,
            Err(reason) => $crate::skip_or_fail!("containerd {}: {reason}", $version.as_str()),
        }
    };
}

impl Containerd {
    /// Starts the daemon and waits until it answers. Shims share one compile cache across
    /// all test instances (entries are content-addressed, so sharing is safe) so that only the
    /// first run of a module pays for compiling it.
    pub fn start(version: Version) -> Result<Containerd, String> {
        Containerd::start_with(version, None, None)
    }

    /// Like [`Containerd::start`], with a compile cache of its own.
    pub fn start_with_private_cache(version: Version) -> Result<Containerd, String> {
        Containerd::start_with(version, Some(()), None)
    }

    /// Like [`Containerd::start`], with the CRI plugin on (see [`CriSetup`]).
    pub fn start_with_cri(version: Version, cri: &CriSetup) -> Result<Containerd, String> {
        let private = cri.private_cache.then_some(());
        Containerd::start_with(version, private, Some(Setup::Cri(cri)))
    }

    /// Like [`Containerd::start`], with the config file `config(dir)` returns, for tests of
    /// config files themselves. It must keep root, state, sockets and `opt` inside `dir`.
    pub fn start_with_config(
        version: Version,
        config: impl FnOnce(&Path) -> String,
    ) -> Result<Containerd, String> {
        Containerd::start_with(version, None, Some(Setup::Config(Box::new(config))))
    }

    fn start_with(
        version: Version,
        private: Option<()>,
        setup: Option<Setup<'_>>,
    ) -> Result<Containerd, String> {
        if !nix_is_root() {
            return Err("containerd needs root".to_owned());
        }
        let bin = binaries(version)?.join("usr/bin");
        // Unix socket paths are limited to ~104 bytes: keep the directory short.
        let temp = tempfile::Builder::new()
            .prefix("wc.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("tempdir: {e}"))?;
        let dir = temp.path().to_owned();
        let namespace = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "wasmcell-test".to_owned());
        let (config, bridge) = match setup {
            None => (config_toml(version, &dir, false), None),
            Some(Setup::Cri(cri)) => {
                let (bridge, cri_config) = cri_toml(version, &dir, cri)?;
                (config_toml(version, &dir, true) + &cri_config, Some(bridge))
            }
            Some(Setup::Config(make)) => (make(&dir), None),
        };
        std::fs::write(dir.join("config.toml"), config).map_err(|e| e.to_string())?;
        let cache = match private {
            Some(()) => dir.join("cache"),
            None => crate::target_dir().join("wasmcell-test-cache"),
        };
        std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
        let child = spawn_daemon(&bin, &dir, &cache, &[])?;
        let mut containerd = Containerd {
            version,
            namespace,
            dir,
            bin,
            cache,
            bridge,
            env: Vec::new(),
            child: Some(child),
            _temp: temp,
        };
        containerd.wait_ready()?;
        Ok(containerd)
    }

    /// Stops the daemon (not its shims) and starts it again on the same state.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop_daemon();
        self.child = Some(spawn_daemon(&self.bin, &self.dir, &self.cache, &self.env)?);
        self.wait_ready()
    }

    /// Restarts the daemon as [`restart`](Self::restart) does, with `key=value` in its
    /// environment from now on (shims inherit containerd's environment).
    pub fn restart_with_env(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.env.push((key.to_owned(), value.to_owned()));
        self.restart()
    }

    /// SIGKILLs the daemon, as an OOM kill or a node fault would (no clean database close, shims
    /// left running), and starts it again on the same state.
    pub fn crash_and_restart(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = Some(spawn_daemon(&self.bin, &self.dir, &self.cache, &self.env)?);
        self.wait_ready()
    }

    /// The shim config file (policy) shims under this containerd read; absent unless a test
    /// writes it.
    pub fn shim_config(&self) -> PathBuf {
        self.dir.join(SHIM_CONFIG)
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The compile cache the shim uses under this containerd.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctr(&["version"]).status.success() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "containerd exited early ({status}); log:\n{}",
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd did not answer in 20 s; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets containerd close its database cleanly; it takes ~1.5 s.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The shim config file's name in the instance directory.
const SHIM_CONFIG: &str = "wasmcell.toml";

/// Where the shim's two binaries (the front containerd execs and the core) are taken from:
/// `WASMCELL_BIN_DIR` (which lets `make bench` run the release shim through this harness), or
/// cargo's debug build.
pub fn shim_bin_dir() -> PathBuf {
    std::env::var_os("WASMCELL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join("debug"))
}

/// Starts containerd with the freshly built shim first on its PATH and a private compile cache.
fn spawn_daemon(
    bin: &Path,
    dir: &Path,
    cache: &Path,
    env: &[(String, String)],
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .map_err(|e| e.to_string())?;
    let shim_dir = shim_bin_dir();
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(bin.join("containerd"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("--log-level")
        .arg("debug")
        .env("PATH", path)
        .env("WASMCELL_CACHE_DIR", cache)
        // Never the machine's /etc/wasmcell/config.toml: tests write this file when they
        // need a shim config.
        .env("WASMCELL_CONFIG", dir.join(SHIM_CONFIG))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting containerd: {e}"))
}

impl Containerd {
    /// The gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// Runs `ctr --address … ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_base()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running ctr: {e}"))
    }

    /// The `ctr` binary.
    pub fn ctr_path(&self) -> PathBuf {
        self.bin.join("ctr")
    }

    /// The options that point `wasmcell import`/`pull` at this instance: its socket, namespace,
    /// `ctr`, and the shim's compile cache (never the machine's).
    pub fn wasmcell_options(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--address".into(),
            path(self.address()),
            "--namespace".into(),
            self.namespace.clone(),
            "--ctr".into(),
            path(self.ctr_path()),
            "--cache-dir".into(),
            path(self.cache_dir()),
        ]
    }

    /// Runs `ctr … ARGS` with `stdin` as its standard input.
    pub fn ctr_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self.ctr_command_piped(args);
        if let Some(mut input) = child.stdin.take() {
            use std::io::Write as _;
            let _ = input.write_all(stdin);
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for ctr: {e}"))
    }

    /// Starts `ctr … ARGS` with piped stdio, not waiting for it.
    pub fn ctr_command_piped(&self, args: &[&str]) -> Child {
        self.spawn_ctr(args, Stdio::piped)
    }

    /// Starts `ctr … ARGS` with stdio discarded, not waiting for it.
    pub fn ctr_command(&self, args: &[&str]) -> Child {
        self.spawn_ctr(args, Stdio::null)
    }

    fn spawn_ctr(&self, args: &[&str], stdio: fn() -> Stdio) -> Child {
        self.ctr_base()
            .args(args)
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .unwrap_or_else(|e| panic!("running ctr: {e}"))
    }

    /// `ctr` pointed at this instance and its namespace.
    pub fn ctr_base(&self) -> Command {
        let mut command = Command::new(self.ctr_path());
        command
            .arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace);
        command
    }

    /// Runs `ctr` and returns stdout, failing the test (with containerd's log) on error.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} on containerd {} failed ({}):\nstdout: {}\nstderr: {}\nlog tail:\n{}",
            self.version.as_str(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first, so no shim or guest outlives the test.
        let namespaces =
            String::from_utf8_lossy(&self.ctr(&["namespaces", "ls", "-q"]).stdout).into_owned();
        for ns in namespaces.lines() {
            let tasks = String::from_utf8_lossy(&self.ctr(&["-n", ns, "task", "ls", "-q"]).stdout)
                .into_owned();
            for task in tasks.lines() {
                let _ = self.ctr(&["-n", ns, "task", "kill", "-s", "SIGKILL", task]);
                let _ = self.ctr(&["-n", ns, "task", "delete", "-f", task]);
            }
        }
        self.stop_daemon();
        kill_processes_using(&self.dir);
        unmount_below(&self.dir);
        remove_cgroups_named(&self.namespace);
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
    }
}

/// The cgroup trees of this host: `/sys/fs/cgroup` (v2, or v1's parent) and each v1 hierarchy
/// mounted below it.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let top = PathBuf::from("/sys/fs/cgroup");
    let mut roots = vec![top.clone()];
    if let Ok(entries) = std::fs::read_dir(&top) {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    roots
}

/// Removes the cgroup `name` (and any left below it) from every cgroup tree. containerd puts
/// a container's cgroup at `/NAMESPACE/ID`, and the shim removes `ID` but, as runc does, not the
/// namespace's parent: with a namespace per instance, each test would leave one empty cgroup per
/// hierarchy on the host. A cgroup with a process left in it is kept (`rmdir` refuses).
pub fn remove_cgroups_named(name: &str) {
    fn remove_bottom_up(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_bottom_up(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    if name.is_empty() || name.contains('/') {
        return;
    }
    for root in cgroup_roots() {
        let cgroup = root.join(name);
        if cgroup.is_dir() {
            remove_bottom_up(&cgroup);
        }
    }
}

/// SIGKILLs every process whose command line names `dir` (shims by their socket, guests by their
/// plan in the bundle), so nothing a failed test left outlives the containerd it belonged to.
pub fn kill_processes_using(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) && pid != std::process::id() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn nix_is_root() -> bool {
    // `id -u` avoids a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        || in_ci()
}

fn config_toml(version: Version, dir: &Path, cri: bool) -> String {
    let d = dir.display();
    let disabled = match (version, cri) {
        (Version::V2_1, false) => {
            r#"["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.grpc.v1.sandbox-controllers",
  "io.containerd.nri.v1.nri"]"#
        }
        // NRI would share /var/run/nri with every other containerd on the machine.
        (Version::V2_1, true) => r#"["io.containerd.nri.v1.nri"]"#,
        (_, false) => r#"["io.containerd.grpc.v1.cri"]"#,
        (_, true) => "[]",
    };
    let schema = if version == Version::V2_1 { 3 } else { 2 };
    format!(
        "version = {schema}\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = {disabled}\n\n\
         [grpc]\n  address = \"{d}/c.sock\"\n\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
    )
}

/// How an instance's config is made beyond the defaults.
enum Setup<'a> {
    Cri(&'a CriSetup),
    Config(Box<dyn FnOnce(&Path) -> String + 'a>),
}

/// What a CRI-enabled instance is set up with.
#[derive(Debug, Clone)]
pub struct CriSetup {
    /// `host:port` of a plain-HTTP registry the CRI plugin may pull from.
    pub registry: String,
    /// The image CRI pins as the pod sandbox image (wasmcell never runs it).
    pub sandbox_image: String,
    /// Extra TOML lines for the `wasmcell` runtime's `options` table.
    pub runtime_options: Option<String>,
    /// CRI's `restrict_oom_score_adj`. Without it CRI asks for -998 on every sandbox, which
    /// these machines' kernels refuse.
    pub restrict_oom_score_adj: bool,
    /// A compile cache of the instance's own (empty at start), instead of the shared one.
    pub private_cache: bool,
}

/// A small number unique among the CRI instances this test process starts, for bridge names
/// and subnets.
fn next_network_index() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The CRI part of the config (tables differ between 1.7 and 2.x) and the CNI files it points
/// at. Returns the bridge name.
fn cri_toml(version: Version, dir: &Path, cri: &CriSetup) -> Result<(String, String), String> {
    let d = dir.display();
    let index = next_network_index();
    // Distinct per test process and instance: bridge names are global, and so are routes.
    let pid = std::process::id();
    let bridge = format!("wc{}x{index}", pid % 100_000);
    let subnet = format!("10.{}.{}.0/24", 100 + pid % 100, index % 250);
    let cni_dir = dir.join("cni");
    std::fs::create_dir_all(&cni_dir).map_err(|e| e.to_string())?;
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("wasmcell-{bridge}"),
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "dataDir": dir.join("cni-ipam"),
            }
        }]
    });
    std::fs::write(cni_dir.join("10-wasmcell.conflist"), conflist.to_string())
        .map_err(|e| e.to_string())?;
    let hosts = dir.join("certs.d").join(&cri.registry);
    std::fs::create_dir_all(&hosts).map_err(|e| e.to_string())?;
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{r}\"\n[host.\"http://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            r = cri.registry
        ),
    )
    .map_err(|e| e.to_string())?;
    let options = cri.runtime_options.clone().unwrap_or_default();
    let restrict = cri.restrict_oom_score_adj;
    let sandbox = &cri.sandbox_image;
    let text = match version {
        Version::V2_1 => format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{d}/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = {restrict}
  disable_apparmor = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{d}/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmcell]
    runtime_type = "io.containerd.wasmcell.v1"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmcell.options]
{options}
"#
        ),
        Version::V1_7 | Version::V1_6 => format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = {restrict}
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  # 1.7 drops its built-in runc entry once any runtime is configured.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmcell]
    runtime_type = "io.containerd.wasmcell.v1"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmcell.options]
{options}
"#
        ),
    };
    Ok((bridge, text))
}
