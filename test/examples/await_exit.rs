//! `make bench`'s signal figure: how long a signal sent with `ctr task kill` takes to end a
//! task, as a client already waiting on the task sees it.
//!
//!     await_exit ADDRESS NAMESPACE ID -- KILLER...
//!
//! Sends containerd's `Wait` for task ID, gives containerd a moment to pass it to the shim,
//! then runs KILLER (e.g. `ctr task kill -s SIGTERM ID`) and waits for both. Prints
//! `TO_EXIT_US KILLER_US STATUS`: microseconds from starting KILLER to the `Wait` answer, the
//! killer's own run time, and the task's exit status. Fails if KILLER fails or the wait does.
//! (`ctr` has no command that waits for a running task, which is why this exists.)

use std::process::Command;
use std::time::{Duration, Instant};

use containerd_client::services::v1::WaitRequest;
use containerd_client::{Client, with_namespace};
use tonic::Request;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the waiter's request gets to reach the shim before the signal is sent; the
/// bench's earlier `sleep 0.3` before the kill did the same for a `ctr` waiter.
const SUBSCRIBE_GRACE: Duration = Duration::from_millis(300);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let (address, namespace, id, killer) = match args.as_slice() {
        [_, address, namespace, id, dashes, killer @ ..]
            if dashes == "--" && !killer.is_empty() =>
        {
            (address, namespace, id, killer)
        }
        _ => return Err("usage: await_exit ADDRESS NAMESPACE ID -- KILLER...".into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::from_path(address).await?;
        let mut tasks = client.tasks();
        let request = WaitRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        };
        let namespace_owned = namespace.clone();
        let wait = tokio::spawn(async move {
            let answer = tasks
                .wait(with_namespace!(request, namespace_owned.as_str()))
                .await;
            (Instant::now(), answer)
        });
        tokio::time::sleep(SUBSCRIBE_GRACE).await;
        if wait.is_finished() {
            let (_, answer) = wait.await?;
            return Err(format!("task {id} ended before the signal was sent: {answer:?}").into());
        }
        let started = Instant::now();
        let status = tokio::task::spawn_blocking({
            let killer = killer.to_vec();
            move || Command::new(&killer[0]).args(&killer[1..]).status()
        })
        .await??;
        let killer_done = Instant::now();
        if !status.success() {
            return Err(format!("{} failed: {status}", killer.join(" ")).into());
        }
        let (exited, answer) = wait.await?;
        let exit_status = answer?.into_inner().exit_status;
        println!(
            "{} {} {exit_status}",
            exited.saturating_duration_since(started).as_micros(),
            killer_done.duration_since(started).as_micros()
        );
        Ok(())
    })
}
