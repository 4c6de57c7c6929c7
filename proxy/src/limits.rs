//! Admission and pace limits: how many transfers at once (in all, and per
//! client address), and how slowly a client may send an upload body.
//!
//! ```text
//!   request -> Limits::admit(peer) -> Permit (held for the transfer's life)
//!   body    -> Paced<S>: every chunk resets the idle deadline; after a grace
//!              period the average rate must stay above --min-upload-rate
//! ```
//! Counting per client address is a map entry per active client; the map
//! only holds clients with a transfer in flight, so it is bounded by the
//! global limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::Reject;

pub struct Limits {
    global: Arc<Semaphore>,
    max_global: usize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
    in_flight: Gauge,
}

pub struct Permit {
    _global: OwnedSemaphorePermit,
    client: IpAddr,
    limits: Arc<Limits>,
}

impl Limits {
    pub fn new(max_global: usize, max_per_client: usize, in_flight: Gauge) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(max_global)),
            max_global,
            per_client: Mutex::new(HashMap::new()),
            max_per_client,
            in_flight,
        })
    }

    /// Never waits: a full proxy says so at once (503 + Retry-After) rather than queueing bytes.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Permit, Reject> {
        {
            let mut map = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(client).or_insert(0);
            if *n >= self.max_per_client {
                return Err(Reject::TooManyClientTransfers {
                    limit: self.max_per_client,
                });
            }
            *n += 1;
        }
        match self.global.clone().try_acquire_owned() {
            Ok(p) => {
                self.in_flight.inc();
                Ok(Permit {
                    _global: p,
                    client,
                    limits: self.clone(),
                })
            }
            Err(_) => {
                self.release(client);
                Err(Reject::Overloaded {
                    limit: self.max_global,
                })
            }
        }
    }

    fn release(&self, client: IpAddr) {
        let mut map = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&client);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.in_flight.dec();
        self.limits.release(self.client);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Longest wait for the next chunk.
    pub idle: Duration,
    /// Bytes per second averaged since the start, enforced after `grace`. 0 disables.
    pub min_rate: u64,
    pub grace: Duration,
}

impl Pace {
    /// Is `got` bytes after `elapsed` still above the minimum rate (once past the grace)?
    pub fn check(&self, got: u64, elapsed: Duration) -> Result<(), BodyError> {
        if self.min_rate > 0 && elapsed > self.grace {
            let secs = elapsed.as_secs_f64();
            if (got as f64) < self.min_rate as f64 * secs {
                return Err(BodyError::TooSlow {
                    got,
                    secs,
                    min_rate: self.min_rate,
                });
            }
        }
        Ok(())
    }
}

/// Why a paced body stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("client sent nothing for {0:?}")]
    Idle(Duration),
    #[error("client sent {got} bytes in {secs:.1}s, under the {min_rate} bytes/s minimum")]
    TooSlow { got: u64, secs: f64, min_rate: u64 },
    #[error("client body: {0}")]
    Client(String),
}

/// A request body with an idle deadline and a minimum average rate.
pub struct Paced<S> {
    inner: S,
    pace: Pace,
    started: Instant,
    got: u64,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Paced<S> {
    pub fn new(inner: S, pace: Pace) -> Self {
        let now = Instant::now();
        Self {
            inner,
            pace,
            started: now,
            got: 0,
            deadline: Box::pin(tokio::time::sleep_until(now + pace.idle)),
        }
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.got += chunk.len() as u64;
                let now = Instant::now();
                if let Err(e) = this.pace.check(this.got, now - this.started) {
                    return Poll::Ready(Some(Err(e)));
                }
                this.deadline.as_mut().reset(now + this.pace.idle);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e.to_string())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                // A trickle below the rate also ends here: the idle timer fires
                // between chunks, or the rate check fires on the next one.
                Poll::Ready(Some(Err(BodyError::Idle(this.pace.idle))))
            }
        }
    }
}

impl From<BodyError> for Reject {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Idle(_) => Reject::TooSlow { min_rate: 0 },
            BodyError::TooSlow { min_rate, .. } => Reject::TooSlow { min_rate },
            BodyError::Client(m) => Reject::ClientAborted(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::net::Ipv4Addr;

    #[test]
    fn per_client_then_global() {
        let l = Limits::new(3, 2, Gauge::default());
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(
            l.admit(a).err().unwrap().rule(),
            "too_many_client_transfers"
        );
        let _p3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err().unwrap().rule(), "overloaded");
        drop(p1);
        assert_eq!(l.in_flight.get(), 2);
        let _p4 = l.admit(a).unwrap();
        assert_eq!(l.in_flight.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_body_is_cut() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(1);
        let s = tokio_stream_from(rx);
        let mut p = Paced::new(
            s,
            Pace {
                idle: Duration::from_secs(5),
                min_rate: 0,
                grace: Duration::from_secs(1),
            },
        );
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        assert!(p.next().await.unwrap().is_ok());
        // Nothing more arrives: the paused clock jumps to the deadline.
        assert!(matches!(p.next().await, Some(Err(BodyError::Idle(_)))));
    }

    #[tokio::test(start_paused = true)]
    async fn trickle_is_cut_after_grace() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(1);
        let mut p = Paced::new(
            tokio_stream_from(rx),
            Pace {
                idle: Duration::from_secs(60),
                min_rate: 100,
                grace: Duration::from_secs(10),
            },
        );
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx
                    .send(Ok(Bytes::from_static(b"1234567890")))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut ok = 0;
        loop {
            match p.next().await {
                Some(Ok(_)) => ok += 1,
                Some(Err(BodyError::TooSlow { .. })) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        // 10 bytes/s against a 100 bytes/s minimum: cut right after the 10 s grace.
        assert_eq!(ok, 10);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    ) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
