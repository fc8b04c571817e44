//! The memory set aside for payloads: request bodies as they arrive, and large responses
//! until their client has read them. One budget for both (a quarter of the memory
//! budget, `config::budget`), counted in KiB, taken with `try_acquire`: a request that
//! does not fit is shed at once with 503, never queued.
//!
//! Bodies are charged frame by frame as they arrive, twice their size (the bytes, and the
//! copy that parsing makes), so that a client announcing a large body holds only what it
//! has sent. Responses of at least [`CHARGED_RESPONSE_BYTES`] are charged when they leave
//! the handler and released when hyper drops them: when the client has read them all,
//! or when its connection is closed (at the latest by the write timeout of
//! `http::server`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Responses smaller than this are not charged: the bookkeeping would cost more than the
/// memory it tracks.
pub const CHARGED_RESPONSE_BYTES: usize = 64 * 1024;

/// The shared payload budget, and the one scrape that may go past it.
#[derive(Clone)]
pub struct PayloadBudget {
    kib: Arc<Semaphore>,
    spare_scrape: Arc<Semaphore>,
}

/// Why a body could not be read whole.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Over the size limit.
    TooLarge,
    /// The budget is spent by others: shed.
    OverBudget,
    /// The connection ended before the whole body came: the client went away.
    ClientGone,
    /// The client sent a broken body (chunked encoding that does not parse).
    Broken,
}

/// Why a body could not be read: the connection ended mid-way (an end of file or a reset
/// underneath hyper's error), or the body itself was broken.
fn read_error(error: &axum::Error) -> ReadError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return ReadError::ClientGone;
        }
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return ReadError::ClientGone;
        }
        cause = error.source();
    }
    ReadError::Broken
}

impl PayloadBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            kib: Arc::new(Semaphore::new(bytes.div_ceil(1024))),
            spare_scrape: Arc::new(Semaphore::new(1)),
        }
    }

    fn take(&self, kib: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        self.kib.clone().try_acquire_many_owned(kib).ok()
    }

    /// Reads `body` whole, at most `limit` bytes, charging twice its size as it arrives.
    /// The charge is held as long as the returned [`BodyCharge`] lives.
    pub async fn read(
        &self,
        mut body: Body,
        limit: usize,
    ) -> Result<(Bytes, BodyCharge), ReadError> {
        let mut bytes = BytesMut::new();
        let mut charge: Option<OwnedSemaphorePermit> = None;
        let mut charged_kib = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| read_error(&error))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if bytes.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            let needed_kib = (2 * (bytes.len() + data.len())).div_ceil(1024);
            if needed_kib > charged_kib {
                let more = self
                    .take(needed_kib - charged_kib)
                    .ok_or(ReadError::OverBudget)?;
                match &mut charge {
                    Some(held) => held.merge(more),
                    None => charge = Some(more),
                }
                charged_kib = needed_kib;
            }
            bytes.extend_from_slice(&data);
        }
        Ok((bytes.freeze(), BodyCharge { permit: charge }))
    }

    /// `body` charged to the budget until it is dropped, if it is large enough to count;
    /// `None` when it does not fit.
    pub fn charge_response(&self, body: Body) -> Option<Body> {
        self.charge_or(body, || None)
    }

    /// A scrape served where any client may scrape too (`/metrics` on the main port):
    /// charged as any answer while it fits, and past that one at a time anyway. Prometheus
    /// scrapes a target one scrape after the other, so its scrape still goes through when
    /// the budget is spent by others (refused, it would page as the service down, and
    /// that page would hold back the real ones); many clients' slow scrapes still cannot
    /// hold more than the budget and one exposition.
    pub fn charge_scrape(&self, body: Body) -> Option<Body> {
        self.charge_or(body, || self.spare_scrape.clone().try_acquire_owned().ok())
    }

    fn charge_or(
        &self,
        body: Body,
        past_the_budget: impl FnOnce() -> Option<OwnedSemaphorePermit>,
    ) -> Option<Body> {
        let size = http_body::Body::size_hint(&body).exact().unwrap_or(0) as usize;
        if size < CHARGED_RESPONSE_BYTES {
            return Some(body);
        }
        let permit = self.take(size.div_ceil(1024)).or_else(past_the_budget)?;
        Some(Body::new(Charged {
            inner: body,
            pending: Bytes::new(),
            _permit: permit,
        }))
    }

    #[cfg(test)]
    pub(crate) fn available_kib(&self) -> usize {
        self.kib.available_permits()
    }
}

/// A request body's charge on the budget: given back when this is dropped. Whoever holds
/// what the body was parsed into holds this with it (`extract::Json`), so that the parsed
/// value is counted for as long as it lives (none for an empty body).
#[derive(Debug)]
#[must_use = "the charge is given back as soon as this is dropped"]
pub struct BodyCharge {
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyCharge {
    /// Gives back all but `bytes` of the charge (rounded up to KiB): once the body is
    /// parsed, what stays of it may be far less than it was (a body padded with white
    /// space), and the charge must not hold the budget for what is no longer there.
    pub fn keep(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.permit {
            let excess = permit.num_permits().saturating_sub(bytes.div_ceil(1024));
            drop(permit.split(excess));
        }
    }
}

/// A response body that keeps its charge until hyper has taken all of it, handed over in
/// slices of [`SLICE`]: hyper takes the next slice only when its write buffer has room,
/// so a client that stops reading stops the body, and the charge stays until the
/// connection is closed. (Handed over whole, the body would end at once, its charge with
/// it, while its bytes waited in hyper's buffer for a client that never reads.)
struct Charged {
    inner: Body,
    pending: Bytes,
    _permit: OwnedSemaphorePermit,
}

const SLICE: usize = 16 * 1024;

impl http_body::Body for Charged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        loop {
            if !self.pending.is_empty() {
                let take = self.pending.len().min(SLICE);
                let slice = self.pending.split_to(take);
                return Poll::Ready(Some(Ok(http_body::Frame::data(slice))));
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.pending = data,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        hint.set_lower(hint.lower() + pending);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_charged_twice_its_size_while_held_then_released() {
        let budget = PayloadBudget::new(1024 * 1024);
        let (bytes, charge) = budget
            .read(Body::from(vec![b'x'; 100 * 1024]), 1 << 20)
            .await
            .unwrap();
        assert_eq!(bytes.len(), 100 * 1024);
        assert_eq!(budget.available_kib(), 1024 - 200);
        drop(charge);
        assert_eq!(budget.available_kib(), 1024);
    }

    #[tokio::test]
    async fn a_charge_can_be_cut_down_to_what_stays_of_the_body() {
        let budget = PayloadBudget::new(1024 * 1024);
        let (_, mut charge) = budget
            .read(Body::from(vec![b' '; 100 * 1024]), 1 << 20)
            .await
            .unwrap();
        charge.keep(3000);
        assert_eq!(budget.available_kib(), 1024 - 3, "3000 bytes: 3 KiB");
        charge.keep(100 * 1024);
        assert_eq!(budget.available_kib(), 1024 - 3, "never more than it held");
        drop(charge);
        assert_eq!(budget.available_kib(), 1024);
    }

    #[tokio::test]
    async fn over_the_limit_or_the_budget_is_refused_and_nothing_stays_charged() {
        let budget = PayloadBudget::new(256 * 1024);
        assert_eq!(
            budget
                .read(Body::from(vec![b'x'; 2000]), 1000)
                .await
                .unwrap_err(),
            ReadError::TooLarge
        );
        assert_eq!(
            budget
                .read(Body::from(vec![b'x'; 200 * 1024]), 1 << 20)
                .await
                .unwrap_err(),
            ReadError::OverBudget
        );
        assert_eq!(budget.available_kib(), 256);
    }

    #[tokio::test]
    async fn a_charged_response_keeps_its_charge_until_its_last_slice_is_taken() {
        let budget = PayloadBudget::new(256 * 1024);
        let mut body = budget
            .charge_response(Body::from(vec![b'x'; 100 * 1024]))
            .unwrap();
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(100 * 1024));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), SLICE);
        assert_eq!(budget.available_kib(), 156, "charged while slices remain");
        let mut taken = first.len();
        while let Some(frame) = body.frame().await {
            taken += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(taken, 100 * 1024);
        drop(body);
        assert_eq!(budget.available_kib(), 256);
    }

    #[tokio::test]
    async fn large_responses_are_charged_until_dropped_small_ones_never() {
        let budget = PayloadBudget::new(256 * 1024);
        let small = budget
            .charge_response(Body::from(vec![b'x'; 1000]))
            .unwrap();
        assert_eq!(budget.available_kib(), 256);
        let large = budget
            .charge_response(Body::from(vec![b'x'; 200 * 1024]))
            .unwrap();
        assert_eq!(budget.available_kib(), 56);
        assert!(
            budget
                .charge_response(Body::from(vec![b'x'; 100 * 1024]))
                .is_none(),
            "does not fit"
        );
        drop(large);
        drop(small);
        assert_eq!(budget.available_kib(), 256);
    }

    #[tokio::test]
    async fn a_scrape_is_charged_while_it_fits_and_past_the_budget_one_at_a_time() {
        let budget = PayloadBudget::new(256 * 1024);
        let exposition = || Body::from(vec![b'x'; 100 * 1024]);
        let fits = budget.charge_scrape(exposition()).unwrap();
        assert_eq!(budget.available_kib(), 156, "charged while it fits");
        let spent = budget.charge_response(Body::from(vec![b'x'; 156 * 1024]));
        assert_eq!(budget.available_kib(), 0);
        let past = budget
            .charge_scrape(exposition())
            .expect("one past the budget");
        assert!(budget.charge_scrape(exposition()).is_none(), "only one");
        assert!(
            budget.charge_response(exposition()).is_none(),
            "never an answer"
        );
        drop(past);
        let again = budget.charge_scrape(exposition()).expect("the next one");
        drop((fits, spent, again));
        assert_eq!(budget.available_kib(), 256);
    }
}
