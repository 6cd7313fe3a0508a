//! Kubernetes as the kubelet drives containerd: a private OCI registry (Debian's
//! `docker-registry` on 127.0.0.1, filled with `skopeo`) and a CRI client (k8s-cri) on a
//! CRI-enabled private containerd.

use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::which;

/// A private registry on 127.0.0.1, storage in a temp dir; stopped on drop.
#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry` on a free loopback port and waits until it answers.
    pub fn start() -> Result<Registry, String> {
        Self::start_with_users(&[])
    }

    /// A registry that asks for HTTP basic credentials, accepting each `(user, password)`
    /// (an htpasswd file made with Debian's `htpasswd`, from apache2-utils).
    pub fn start_with_users(users: &[(&str, &str)]) -> Result<Registry, String> {
        let binary = which("docker-registry")
            .ok_or("docker-registry is not installed (apt-get install docker-registry)")?;
        which("skopeo").ok_or("skopeo is not installed")?;
        let dir = tempfile::Builder::new()
            .prefix("wcreg.")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let mut lines = String::new();
            for (user, password) in users {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .map_err(|e| {
                        format!("running htpasswd (apt-get install apache2-utils): {e}")
                    })?;
                if !out.status.success() {
                    return Err(format!(
                        "htpasswd: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                lines.push_str(String::from_utf8_lossy(&out.stdout).trim());
                lines.push('\n');
            }
            std::fs::write(&htpasswd, lines).map_err(|e| e.to_string())?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wasmcell-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 {auth}http:\n  addr: {address}\n",
                dir.path().join("storage").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting docker-registry: {e}"))?;
        let registry = Registry {
            address,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.address).is_err() {
            if Instant::now() > deadline {
                return Err("docker-registry did not listen within 20 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// Pushes the OCI layout tar `tar` as `REGISTRY/repository:tag` with skopeo; returns the
    /// full reference.
    pub fn push(&self, tar: &Path, repository_tag: &str) -> Result<String, String> {
        let reference = format!("{}/{repository_tag}", self.address);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", tar.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .map_err(|e| format!("running skopeo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "skopeo copy {} {reference}: {}",
                tar.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CRI clients on one connection, with a runtime to drive them from synchronous tests.
#[derive(Debug)]
pub struct Cri {
    /// RuntimeService (pods, containers, stats).
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService (pulls).
    pub images: ImageServiceClient<Channel>,
    tokio: tokio::runtime::Runtime,
}

impl Cri {
    /// Connects to containerd's gRPC socket, where the CRI plugin serves.
    pub fn connect(socket: &Path) -> Result<Cri, String> {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let channel = tokio
            .block_on(containerd_client::connect(socket))
            .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            tokio,
        })
    }

    /// Runs one CRI call (or any future) to completion.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.tokio.block_on(future)
    }
}

/// A pod log directory under `dir`, created.
pub fn log_dir(dir: &Path, pod: &str) -> PathBuf {
    let path = dir.join("pods").join(pod);
    let _ = std::fs::create_dir_all(&path);
    path
}
