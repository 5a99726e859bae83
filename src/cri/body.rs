//! gRPC bodies on h2 streams to containerd: reading one as an `http_body::Body`, and sending
//! any body into a stream under the peer's flow control.
//!
//! The shared upstream connection speaks HTTP/2 through the h2 crate directly rather than
//! through hyper's client: hyper adds a channel hop, a spawned body task and a body wrapper
//! per call.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of an incoming h2 stream. Flow-control capacity is handed back as each chunk is
/// taken, so the peer's window (set when the connection is built) bounds what is buffered.
pub struct RecvBody {
    stream: RecvStream,
    data_done: bool,
    done: bool,
}

impl RecvBody {
    pub fn new(stream: RecvStream) -> RecvBody {
        let done = stream.is_end_stream();
        RecvBody { stream, data_done: done, done }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Only fails once the stream is gone, which the next poll reports.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        let trailers = ready!(self.stream.poll_trailers(cx));
        self.done = true;
        Poll::Ready(trailers.transpose().map(|trailers| trailers.map(Frame::trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.stream.is_end_stream()
    }
}

/// Why a body could not be sent to the end.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The body being sent failed.
    #[error("reading the body failed: {0}")]
    Source(BoxError),
    /// The receiving peer reset the stream or the connection failed.
    #[error("sending the body failed: {0}")]
    Sink(h2::Error),
}

/// Sends `body` into `to` to its end, trailers included.
///
/// Data waits for flow-control capacity, except the first chunk: waiting for it would send the
/// message in a second write after the headers, waking the peer twice for a unary call. One
/// chunk is at most one frame of the sending peer, so the excess it buffers is bounded.
pub async fn send<B>(body: B, to: &mut SendStream<Bytes>) -> Result<(), SendError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut first = true;
    loop {
        let frame = poll_fn(|cx| {
            // A peer that resets stops the copy even while the source is silent (a Watch).
            if let Poll::Ready(reset) = to.poll_reset(cx) {
                return Poll::Ready(Err(SendError::Sink(reset.map_or_else(|error| error, h2::Error::from))));
            }
            body.as_mut().poll_frame(cx).map(|frame| frame.transpose().map_err(|e| SendError::Source(e.into())))
        })
        .await?;
        let Some(frame) = frame else {
            to.send_data(Bytes::new(), true).map_err(SendError::Sink)?;
            return Ok(());
        };
        match frame.into_data() {
            Ok(data) => {
                if !first {
                    wait_for_capacity(to, data.len()).await?;
                }
                first = false;
                let end = body.is_end_stream();
                to.send_data(data, end).map_err(SendError::Sink)?;
                if end {
                    return Ok(());
                }
            }
            Err(frame) => {
                let Ok(trailers) = frame.into_trailers() else { continue };
                to.send_trailers(trailers).map_err(SendError::Sink)?;
                return Ok(());
            }
        }
    }
}

/// The gRPC status code in response headers or trailers; the message is not needed, so it is
/// not decoded.
pub fn grpc_code(headers: &HeaderMap) -> Option<tonic::Code> {
    headers.get("grpc-status").map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

async fn wait_for_capacity(to: &mut SendStream<Bytes>, len: usize) -> Result<(), SendError> {
    to.reserve_capacity(len);
    while to.capacity() < len {
        match poll_fn(|cx| to.poll_capacity(cx)).await {
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(SendError::Sink(error)),
            None => return Err(SendError::Sink(h2::Error::from(Reason::STREAM_CLOSED))),
        }
    }
    Ok(())
}
