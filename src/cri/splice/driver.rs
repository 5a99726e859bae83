//! The I/O loop around the state machine: reads each socket into a buffer of its own and hands
//! the bytes to the machine, writes what the machine has for each side as the sockets take it,
//! runs local calls' tasks, and ticks while the connection waits for containerd.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::Local;
use super::limits::{ANSWER_QUEUE, FULL_READ, PROBE_INTERVAL};
use super::machine::{Action, Answer, Ending, Event, Machine, Peer};
use crate::cri::budget::Held;
use crate::cri::frame;
use crate::cri::proxy::Route;

/// Serves one kubelet connection over `containerd` until either side closes it, a side
/// breaks the protocol, or a drain that `draining` announces has finished.
/// `containerd` is None when it could not be reached: the connection then starts without it.
pub async fn run<L: Local>(
    mut kubelet: UnixStream,
    mut containerd: Option<UnixStream>,
    local: Arc<L>,
    mut draining: watch::Receiver<bool>,
) {
    let (events, mut answers) = mpsc::channel(ANSWER_QUEUE);
    let mut machine = Machine::new(local.clone(), containerd.is_some(), Instant::now());
    let mut tasks = Tasks { local, events, running: HashMap::new() };
    let (mut kubelet_read, mut kubelet_write) = kubelet.split();
    let (mut containerd_read, mut containerd_write) = containerd.as_mut().map(UnixStream::split).unzip();
    let (mut from_kubelet, mut from_containerd) = (BytesMut::with_capacity(32 << 10), BytesMut::new());
    let mut drain_seen = false;
    let mut ending = None;
    let mut probes = tokio::time::interval(PROBE_INTERVAL);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        while let Some(action) = machine.next_action() {
            if let Some(end) = tasks.act(action) {
                ending = Some(end);
            }
        }
        if let Err(error) = flush(&mut kubelet_write, machine.outbox(Peer::Kubelet)) {
            break format!("writing to the kubelet: {error}");
        }
        if machine.spliced()
            && let Some(containerd_write) = containerd_write.as_mut()
            && let Err(error) = flush(containerd_write, machine.outbox(Peer::Containerd))
        {
            machine.handle(Event::ContainerdLost(format!("writing to containerd: {error}")), Instant::now());
            continue;
        }
        match ending.take() {
            Some(Ending::Broken(why)) => break why,
            Some(Ending::Done) if machine.outbox(Peer::Kubelet).is_empty() && !unsent_to_containerd(&mut machine) => {
                break String::new();
            }
            still => ending = still,
        }
        let to_kubelet = !machine.outbox(Peer::Kubelet).is_empty();
        let to_containerd = unsent_to_containerd(&mut machine);
        let (read_containerd, read_kubelet) = (machine.reads(Peer::Containerd), machine.reads(Peer::Kubelet));
        let (takes_answers, probing) = (machine.takes_answers(), machine.probing());
        let outcome = tokio::select! {
            biased;
            ready = kubelet_write.writable(), if to_kubelet => match ready {
                Ok(()) => Step::Go,
                Err(error) => Step::Closed(format!("kubelet socket: {error}")),
            },
            ready = writable(containerd_write.as_ref()), if to_containerd => match ready {
                Ok(()) => Step::Go,
                Err(error) => Step::Handle(Event::ContainerdLost(format!("containerd socket: {error}"))),
            },
            read = read(containerd_read.as_mut(), &mut from_containerd), if read_containerd => match read {
                Ok(0) => Step::Handle(Event::ContainerdLost("containerd closed the connection".to_owned())),
                Ok(_) => {
                    machine.received(Peer::Containerd, &mut from_containerd, Instant::now());
                    Step::Go
                }
                Err(error) => Step::Handle(Event::ContainerdLost(format!("containerd socket: {error}"))),
            },
            read = read(Some(&mut kubelet_read), &mut from_kubelet), if read_kubelet => match read {
                Ok(0) => Step::Closed("the kubelet closed the connection".to_owned()),
                Ok(read) => {
                    machine.received(Peer::Kubelet, &mut from_kubelet, Instant::now());
                    // A read that filled the buffer is one of many: the other connections on
                    // this worker get their turn before the next.
                    if read >= FULL_READ { Step::Yield } else { Step::Go }
                }
                Err(error) => Step::Closed(format!("kubelet socket: {error}")),
            },
            Some(answer) = answers.recv(), if takes_answers => Step::Handle(Event::Answer(answer)),
            _ = probes.tick(), if probing => {
                if machine.dials() && tasks.local.dial().await.is_ok() {
                    machine.handle(Event::ContainerdBack, Instant::now());
                }
                Step::Handle(Event::Tick)
            }
            true = draining.wait_for(|draining| *draining).map(|seen| seen.is_ok()), if !drain_seen => {
                drain_seen = true;
                Step::Handle(Event::Drain)
            }
        };
        match outcome {
            Step::Go => {}
            Step::Yield => tokio::task::yield_now().await,
            Step::Handle(event) => machine.handle(event, Instant::now()),
            Step::Closed(why) => break why,
        }
    };
    machine.abandon();
    tasks.abort_all();
    if !ended.is_empty() {
        tracing::debug!(reason = %ended, "spliced connection closed");
    }
}

enum Step {
    Go,
    Yield,
    Handle(Event),
    Closed(String),
}

fn unsent_to_containerd<L: Local>(machine: &mut Machine<L>) -> bool {
    machine.spliced() && !machine.outbox(Peer::Containerd).is_empty()
}

/// The tasks answering local calls on one connection.
struct Tasks<L> {
    local: Arc<L>,
    events: mpsc::Sender<Answer>,
    running: HashMap<u32, AbortHandle>,
}

impl<L: Local> Tasks<L> {
    /// Carries out an action other than closing, which it returns.
    fn act(&mut self, action: Action) -> Option<Ending> {
        match action {
            Action::Answer { stream, route, request, held } => {
                let (local, events) = (self.local.clone(), self.events.clone());
                let task = tokio::spawn(answer(local, route, request, stream, events, held));
                self.running.insert(stream, task.abort_handle());
            }
            Action::Cancel(stream) => {
                if let Some(task) = self.running.remove(&stream) {
                    task.abort();
                }
            }
            Action::Close(ending) => return Some(ending),
        }
        None
    }

    /// The connection is gone: local calls still running are of no use to anyone.
    fn abort_all(&mut self) {
        for (_, task) in self.running.drain() {
            task.abort();
        }
    }
}

/// Reads from a side there is (a side there is not never has anything to read).
async fn read(from: Option<&mut ReadHalf<'_>>, buffer: &mut BytesMut) -> std::io::Result<usize> {
    let Some(from) = from else { return std::future::pending().await };
    buffer.reserve(frame::DEFAULT_MAX_FRAME + frame::HEAD_LEN);
    from.read_buf(buffer).await
}

async fn writable(to: Option<&WriteHalf<'_>>) -> std::io::Result<()> {
    match to {
        Some(to) => to.writable().await,
        None => std::future::pending().await,
    }
}

/// Writes what the socket takes now; the rest waits for it to become writable.
fn flush(to: &mut WriteHalf<'_>, buffer: &mut BytesMut) -> std::io::Result<()> {
    while !buffer.is_empty() {
        match to.try_write(buffer) {
            Ok(written) => buffer.advance(written),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Runs pullgate's own answer to a local call and reports it, part by part; `held` (the
/// request's share of the budget) is given back once the answer is made.
async fn answer<L: Local>(
    local: Arc<L>,
    route: Route,
    request: http::Request<Full<Bytes>>,
    stream: u32,
    events: mpsc::Sender<Answer>,
    held: Held,
) {
    // A handler that panics still ends its stream rather than leaving the kubelet waiting.
    let mut guard = Unanswered { stream, events: events.clone(), armed: true };
    let response = local.answer(route, request).await;
    guard.armed = false;
    drop(held);
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    if events.send(Answer::Head { stream, parts, end }).await.is_err() || end {
        return;
    }
    let last = loop {
        match body.frame().await {
            None => break Answer::End { stream },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if events.send(Answer::Data { stream, data }).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        break Answer::Trailers { stream, trailers };
                    }
                }
            },
            Some(Err(_)) => break Answer::Failed { stream },
        }
    };
    let _ = events.send(last).await;
}

/// Reports a local call as failed if its handler unwinds before answering.
struct Unanswered {
    stream: u32,
    events: mpsc::Sender<Answer>,
    armed: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.events.try_send(Answer::Failed { stream: self.stream });
        }
    }
}
