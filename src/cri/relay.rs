//! Passthrough: one call relayed between the kubelet's stream and a stream to containerd.
//!
//! This is the h2 relay, which ends HTTP/2 at pullgate. Kubelet connections take it only while
//! containerd cannot be reached when they connect; otherwise they are spliced (`splice`), which
//! costs a third of the latency.
//!
//! Headers, messages and trailers are copied as they are, in both directions at once (server
//! streaming calls such as GetContainerEvents keep flowing). A reset on either side is passed
//! to the other, so a kubelet that gives up cancels the call in containerd too.

use std::future::poll_fn;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;

use crate::cri::body::{self, RecvBody};
use crate::cri::observe::CallLog;
use crate::cri::respond;
use crate::cri::upstream::Upstream;
use crate::metrics::CallOutcome;

/// Relays the call; `log` records how it ended.
pub async fn relay(
    upstream: &Upstream,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    log: CallLog,
) {
    let (parts, inbound) = request.into_parts();
    let request_ended = inbound.is_end_stream();
    let (response, mut outbound) = match upstream.open(parts, request_ended).await {
        Ok(opened) => opened,
        Err(status) => return respond::status(&mut respond, status, log),
    };
    let request_side = async move {
        if let Err(error) = body::send(RecvBody::new(inbound), &mut outbound, |_| {}).await {
            outbound.send_reset(error.reason());
        }
    };
    let response_side = async move {
        let response = tokio::select! {
            response = response => response,
            // The kubelet gave up before containerd answered; dropping the call cancels it.
            _ = poll_fn(|cx| respond.poll_reset(cx)) => return log.end(CallOutcome::Aborted),
        };
        match response {
            Ok(response) => respond::send(respond, response.map(RecvBody::new), log).await,
            Err(error) => respond::status(&mut respond, upstream.unavailable(&error), log),
        }
    };
    tokio::pin!(request_side, response_side);
    if !request_ended {
        tokio::select! {
            biased;
            // The answer decides when the call is over; a request still being sent then is moot.
            () = &mut response_side => return,
            () = &mut request_side => {}
        }
    }
    response_side.await
}
