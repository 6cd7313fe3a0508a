//! How the CLI reaches the user's containerd: through `ctr`, the client that is installed
//! wherever containerd is, with the same address and namespace flags for every subcommand.

use std::path::PathBuf;
use std::process::Command;

use clap::Args;

/// Where containerd is and which `ctr` talks to it.
#[derive(Debug, Clone, Args)]
pub struct ContainerdArgs {
    /// containerd's socket.
    #[arg(
        long,
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: String,
    /// containerd namespace.
    #[arg(
        long,
        short = 'n',
        env = "CONTAINERD_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// The ctr binary to use.
    #[arg(long, default_value = "ctr")]
    pub ctr: PathBuf,
}

impl ContainerdArgs {
    /// `ctr --address … --namespace …`, ready for a subcommand.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.ctr);
        command.args(["--address", &self.address, "--namespace", &self.namespace]);
        command
    }
}
