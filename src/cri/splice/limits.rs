//! Every bound of the splice relay, with the reason for its value.

use std::time::Duration;

use crate::cri::frame;

/// A kubelet's metadata is a few hundred bytes; 16 KiB is what hyper's HTTP/2 server allows.
pub const MAX_HEADER_LIST_BYTES: usize = 16 << 10;
/// A header block is collected whole before it is decoded; past this the kubelet is not
/// sending headers but a flood. Four times `MAX_HEADER_LIST_BYTES`, which covers any HPACK
/// encoding of a list within it (Huffman's longest code is under 4 bytes an octet). Every
/// connection may hold one, so this is kept small.
pub const MAX_KUBELET_HEADER_BLOCK_BYTES: usize = 4 * MAX_HEADER_LIST_BYTES;
/// The same for containerd, whose answers pullgate trusts more (`upstream`'s header list limit).
pub const MAX_CONTAINERD_HEADER_BLOCK_BYTES: usize = 1 << 20;
/// PullImage and health requests are small; see `pull::MAX_REQUEST_BYTES`.
pub const MAX_LOCAL_REQUEST_BYTES: usize = (1 << 20) + 5;
/// Requests of local calls buffered on one connection at once, all calls together, counted
/// by the memory their buffers hold.
pub const MAX_LOCAL_BYTES: usize = 4 << 20;
/// Calls in flight on one connection; the kubelet runs a few dozen at most.
pub const MAX_STREAMS: usize = 1000;
/// Of those, calls pullgate answers itself (PullImage, health, refusals): the kubelet pulls a
/// few images at once (one by default) and checks health now and then. Each costs a task and
/// an answer in memory, so a client flooding cheap requests gets REFUSED_STREAM past this.
/// While the connection is without containerd every call is local, so this bounds them all
/// then; gRPC clients retry a REFUSED_STREAM by themselves, as the call was never started.
pub const MAX_LOCAL_STREAMS: usize = 64;
/// Dynamic tables larger than this are refused: the default is 4 KiB.
pub const MAX_HPACK_TABLE_BYTES: usize = 64 << 10;
/// Read no more from a side while this much is waiting to be written to the other. Calls
/// pullgate answers itself are refused (REFUSED_STREAM) while this much waits for the
/// kubelet, counting answers its flow-control window holds back, which pullgate cannot stop
/// reading for: the WINDOW_UPDATEs that release them come from that same socket.
pub const HIGH_WATER: usize = 256 << 10;
/// Read no more from the kubelet while this much pullgate has written for it is unsent: a
/// client that sends calls and never reads the answers (or the resets of calls refused) stops
/// being read itself. A kubelet reads as fast as it is written to, so only one that does not
/// read ever gets here; small, as everything read past it costs work for nobody.
pub const MAX_UNSENT_TO_KUBELET: usize = 64 << 10;
/// Take no more answer parts from local calls while this much of their answers waits for the
/// kubelet's stream windows. Without containerd every call is local, including ListImages of
/// many megabytes: its task then waits (and the shared upstream connection's flow control
/// holds containerd) until the kubelet reads, instead of pullgate queueing the whole answer for
/// a client that holds its window closed.
pub const MAX_WAITING_ANSWER_BYTES: usize = 256 << 10;
/// containerd is credited for the bytes passed on once this many have gathered.
pub const CREDIT_BATCH: usize = 16 << 10;
/// A read of this much from the kubelet is taken as one of a flood, after which the connection
/// lets others run: a kubelet's calls are a few hundred bytes each.
pub const FULL_READ: usize = frame::DEFAULT_MAX_FRAME;
/// While a connection is without containerd, how often pullgate looks whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Once containerd is back, the kubelet is moved to a new, spliced connection (a GOAWAY) in a
/// pause between calls this long, so no call of a client that does not retry races it.
pub const QUIET_BEFORE_MOVE: Duration = Duration::from_millis(250);
/// Answer parts of local calls in flight to the connection task.
pub const ANSWER_QUEUE: usize = 64;
