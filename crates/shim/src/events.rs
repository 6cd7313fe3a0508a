//! The task events the shim sends containerd (`/tasks/create`, `/tasks/start`, `/tasks/exit`,
//! `/tasks/delete`): queued by the task service, forwarded one at a time, in order, over one
//! ttrpc connection to containerd's `TTRPC_ADDRESS`.
//!
//! containerd-shim's own publisher connects on a blocking-pool thread — the only thread a shim
//! whose guests come from the launcher would otherwise start, and a second thread makes the
//! shim's every unmap, and its exit, a cross-CPU TLB shootdown — and puts an event that failed
//! back behind later ones. Here the connection is made on the runtime (connecting to a unix
//! socket never waits for the peer), and an event that fails is retried, on a new connection
//! unless containerd answered it with an error, before the next one goes: an exit never
//! overtakes its start.
//!
//! An event's `Any` is built from its type's static name ([`TaskEvent::TYPE_URL`]), not from
//! protobuf reflection: the first reflective call in a process parses the descriptors of the
//! event's `.proto` file and its imports (gogo's `descriptor.proto` among them), and with a
//! fresh server per pod that cost — about 4% of the shim's CPU per task, measured — was paid
//! by every task.

use std::time::Duration;

use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc;
use log::warn;
use tokio::sync::mpsc;

/// Events waiting to be forwarded; beyond it `publish` waits (up to [`QUEUE_WAIT`]).
const QUEUE_LEN: usize = 1024;
/// How long `publish` waits for room in a full queue before giving the event up.
const QUEUE_WAIT: Duration = Duration::from_secs(3);
/// Attempts per event; the wait before attempt N+1 is N seconds.
const ATTEMPTS: u64 = 5;

/// Why an event could not be sent or queued.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Connecting to containerd's ttrpc address failed.
    #[error("connecting to containerd at {address}: {message}")]
    Connect {
        /// The `TTRPC_ADDRESS`.
        address: String,
        /// Why.
        message: String,
    },
    /// The event could not be turned into an envelope.
    #[error("encoding the {topic} event: {message}")]
    Encode {
        /// Its topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// The queue stayed full, or its forwarder is gone.
    #[error("the {topic} event was not queued: {message}")]
    Queue {
        /// Its topic.
        topic: String,
        /// Why.
        message: String,
    },
}

/// A task event the shim publishes, with the name containerd's type registry knows it by.
pub trait TaskEvent: Message {
    /// The message's full protobuf name, which containerd reads as the `Any`'s type URL.
    const TYPE_URL: &'static str;
}

impl TaskEvent for TaskCreate {
    const TYPE_URL: &'static str = "containerd.events.TaskCreate";
}
impl TaskEvent for TaskStart {
    const TYPE_URL: &'static str = "containerd.events.TaskStart";
}
impl TaskEvent for TaskExit {
    const TYPE_URL: &'static str = "containerd.events.TaskExit";
}
impl TaskEvent for TaskDelete {
    const TYPE_URL: &'static str = "containerd.events.TaskDelete";
}

/// Sends task events to containerd, in the order they are published.
#[derive(Debug)]
pub struct EventPublisher {
    queue: mpsc::Sender<Envelope>,
}

impl EventPublisher {
    /// Connects to containerd at `address` (`unix://…` or a path) and starts the task that
    /// forwards the queue. Call on the runtime.
    pub fn connect(address: &str) -> Result<EventPublisher, EventsError> {
        let client = connect_client(address)?;
        let (queue, pending) = mpsc::channel(QUEUE_LEN);
        tokio::spawn(forward_in_order(address.to_owned(), client, pending));
        Ok(EventPublisher { queue })
    }

    /// Queues `event` under `topic` for containerd's `namespace`.
    pub async fn publish<E: TaskEvent>(
        &self,
        topic: &str,
        namespace: &str,
        event: E,
    ) -> Result<(), EventsError> {
        let encode = |message: String| EventsError::Encode {
            topic: topic.to_owned(),
            message,
        };
        let mut any = Any::new();
        any.type_url = E::TYPE_URL.to_owned();
        any.value = event.write_to_bytes().map_err(|e| encode(e.to_string()))?;
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope
            .set_timestamp(containerd_shim::util::timestamp().map_err(|e| encode(e.to_string()))?);
        envelope.set_event(any);
        self.queue
            .send_timeout(envelope, QUEUE_WAIT)
            .await
            .map_err(|e| EventsError::Queue {
                topic: topic.to_owned(),
                message: e.to_string(),
            })
    }
}

fn connect_client(address: &str) -> Result<EventsClient, EventsError> {
    let fd = containerd_shim::util::connect(address).map_err(|e| EventsError::Connect {
        address: address.to_owned(),
        message: e.to_string(),
    })?;
    // SAFETY: `fd` is the connected unix socket `connect` just returned, owned by nobody else;
    // the client takes it over.
    #[allow(unsafe_code)]
    let client = unsafe { Client::from_raw_unix_socket_fd(fd) };
    Ok(EventsClient::new(client))
}

/// Forwards queued events one by one until every [`EventPublisher`] is gone.
async fn forward_in_order(
    address: String,
    mut client: EventsClient,
    mut pending: mpsc::Receiver<Envelope>,
) {
    while let Some(envelope) = pending.recv().await {
        let topic = envelope.topic.clone();
        let mut request = ForwardRequest::new();
        request.set_envelope(envelope);
        for attempt in 1..=ATTEMPTS {
            let Err(e) = client
                .forward(ttrpc::context::with_timeout(0), &request)
                .await
            else {
                break;
            };
            if attempt == ATTEMPTS {
                warn!("dropping the {topic} event after {ATTEMPTS} attempts: {e}");
                break;
            }
            // containerd answered with an error status: the connection itself is fine.
            // Anything else (closed, reset, timed out) may have left it unusable.
            if !matches!(e, ttrpc::error::Error::RpcStatus(_)) {
                match connect_client(&address) {
                    Ok(reconnected) => client = reconnected,
                    Err(e) => warn!("{e}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(attempt)).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use containerd_shim::protos::api::Empty;
    use containerd_shim::protos::protobuf::MessageFull;
    use containerd_shim::protos::shim_async::{Events, create_events};
    use containerd_shim::protos::ttrpc::r#async::{Server, TtrpcContext};

    use super::*;

    /// containerd's events service, as far as the shim sees it: records each topic.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    #[async_trait::async_trait]
    impl Events for Recorder {
        async fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(req.envelope().topic.clone());
            }
            Ok(Empty::new())
        }
    }

    async fn serve(socket: &Path, seen: &Arc<Mutex<Vec<String>>>) -> Server {
        let _ = std::fs::remove_file(socket);
        let mut server = Server::new()
            .bind(&format!("unix://{}", socket.display()))
            .unwrap()
            .register_service(create_events(Arc::new(Recorder(seen.clone()))));
        server.start().await.unwrap();
        server
    }

    async fn wait_for(seen: &Arc<Mutex<Vec<String>>>, count: usize) -> Vec<String> {
        for _ in 0..100 {
            let now = seen.lock().unwrap().clone();
            if now.len() >= count {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.lock().unwrap().clone()
    }

    /// Events arrive in the order they were published, also across containerd closing the
    /// connection (a restart): the event that found it closed is sent again, on a new
    /// connection, before the ones queued behind it.
    #[tokio::test(flavor = "current_thread")]
    async fn events_arrive_in_order_across_a_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock.ttrpc");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut containerd = serve(&socket, &seen).await;
        let publisher = EventPublisher::connect(&format!("unix://{}", socket.display())).unwrap();
        publisher
            .publish("/tasks/create", "ns", TaskCreate::new())
            .await
            .unwrap();
        publisher
            .publish("/tasks/start", "ns", TaskStart::new())
            .await
            .unwrap();
        assert_eq!(wait_for(&seen, 2).await.len(), 2);
        containerd.shutdown().await.unwrap();
        let _restarted = serve(&socket, &seen).await;
        publisher
            .publish("/tasks/exit", "ns", TaskExit::new())
            .await
            .unwrap();
        publisher
            .publish("/tasks/delete", "ns", TaskDelete::new())
            .await
            .unwrap();
        assert_eq!(
            wait_for(&seen, 4).await,
            [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ]
        );
    }

    /// The static type URLs are the names protobuf's reflection gives (what the shim sent
    /// before, and what containerd decodes events by).
    #[test]
    fn static_type_urls_are_the_full_protobuf_names() {
        fn full_name<E: TaskEvent + MessageFull>() -> (String, &'static str) {
            (E::descriptor().full_name().to_owned(), E::TYPE_URL)
        }
        for (reflected, declared) in [
            full_name::<TaskCreate>(),
            full_name::<TaskStart>(),
            full_name::<TaskExit>(),
            full_name::<TaskDelete>(),
        ] {
            assert_eq!(reflected, declared);
        }
    }

    #[test]
    fn an_address_nobody_listens_on_is_named() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let error = EventPublisher::connect("unix:///nonexistent/containerd.sock.ttrpc")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(
                "connecting to containerd at unix:///nonexistent/containerd.sock.ttrpc: "
            ),
            "{error}"
        );
    }
}
