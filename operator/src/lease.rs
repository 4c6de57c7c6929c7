//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's
//! leaderelection does it: one holder at a time, renewed every `renew`,
//! taken over by another replica once it has seen no renewal for `duration`.
//!
//! ```text
//!   every `renew`:  GET lease
//!     absent                        -> CREATE with me as holder         (409: someone was faster)
//!     held by me                    -> REPLACE renewTime                (409: lost it)
//!     held by another, seen renewed
//!       within `duration`           -> follower
//!     held by nobody, or not renewed
//!       for `duration` as seen here -> REPLACE holder = me, transitions+1
//!   leader  <=>  the last successful renewal is younger than `duration - renew`
//! ```
//! Written here rather than taken from a crate: kube-lease-manager (the
//! maintained one for kube 5) keeps reporting "leader" while it cannot reach
//! the API server, and a leader that loses the API server must step down
//! before another replica may take over. Expiry is judged by when this
//! process saw the record change (its own monotonic clock), never by
//! comparing another node's timestamps with ours, so clock skew cannot make
//! two leaders.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews (and a follower checks).
    pub renew: Duration,
}

/// What the last GET showed, and when this process first saw it so.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// We hold it: write a new renewTime.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Another replica holds it and renews it.
    Follow,
}

/// The decision for one round (pure).
pub fn decide(
    holder: Option<&str>,
    me: &str,
    unchanged_since: Instant,
    duration: Duration,
    now: Instant,
) -> Step {
    match holder {
        Some(h) if h == me => Step::Renew,
        Some(h) if !h.is_empty() && now.duration_since(unchanged_since) < duration => Step::Follow,
        _ => Step::Acquire,
    }
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    seen: Option<Seen>,
    last_renewed: Option<Instant>,
}

impl Elector {
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Self {
        Elector {
            api,
            cfg,
            seen: None,
            last_renewed: None,
        }
    }

    /// Whether this replica may act as leader now.
    pub fn is_leader(&self, now: Instant) -> bool {
        let margin = self.cfg.duration.saturating_sub(self.cfg.renew);
        self.last_renewed
            .is_some_and(|t| now.duration_since(t) < margin)
    }

    /// One round: read the Lease and renew, acquire or follow. `Ok(true)` when
    /// this replica holds the Lease after the round.
    pub async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs(self.cfg.duration)),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await, now);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renew_time = spec.renew_time.clone();
        let since = match &self.seen {
            Some(s) if s.holder == holder && s.renew_time == renew_time => s.at,
            _ => now,
        };
        self.seen = Some(Seen {
            holder: holder.clone(),
            renew_time,
            at: since,
        });
        // Its holder's own duration when longer than ours (a replica of another version).
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.duration)
            .max(self.cfg.duration);
        match decide(holder.as_deref(), &self.cfg.identity, since, duration, now) {
            Step::Follow => {
                self.last_renewed = None;
                return Ok(false);
            }
            Step::Renew => {}
            Step::Acquire => {
                spec.holder_identity = Some(self.cfg.identity.clone());
                spec.acquire_time = Some(stamp.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.renew_time = Some(stamp);
        spec.lease_duration_seconds = Some(secs(self.cfg.duration));
        let r = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await;
        self.write(r, now)
    }

    fn write(&mut self, r: Result<Lease, kube::Error>, now: Instant) -> Result<bool, kube::Error> {
        match r {
            Ok(_) => {
                self.last_renewed = Some(now);
                Ok(true)
            }
            // Someone else wrote first (resourceVersion or name conflict).
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.last_renewed = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// On shutdown: hand the Lease over at once instead of after `duration`.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if self.last_renewed.is_none() {
            return Ok(());
        }
        self.last_renewed = None;
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Runs rounds every `renew` and publishes leadership on `tx` until
    /// `shutdown` turns true; then releases the Lease if held.
    pub async fn run(mut self, tx: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let round = tokio::time::timeout(self.cfg.renew, self.round()).await;
            match round {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "lease round failed")
                }
                Err(_) => tracing::warn!(lease = %self.cfg.name, "lease round timed out"),
            }
            let leader = self.is_leader(Instant::now());
            if *tx.borrow() != leader {
                tracing::info!(
                    identity = %self.cfg.identity,
                    lease = %self.cfg.name,
                    leader,
                    "{}",
                    if leader { "became leader" } else { "not the leader" }
                );
                tx.send_replace(leader);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.renew) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        tx.send_replace(false);
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the lease failed");
        }
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn the_holder_renews_and_others_follow_while_it_does() {
        let t0 = Instant::now();
        assert_eq!(decide(Some("me"), "me", t0, D, t0), Step::Renew);
        assert_eq!(decide(Some("other"), "me", t0, D, t0 + D / 2), Step::Follow);
    }

    #[test]
    fn a_free_or_stale_lease_is_taken() {
        let t0 = Instant::now();
        assert_eq!(decide(None, "me", t0, D, t0), Step::Acquire);
        assert_eq!(decide(Some(""), "me", t0, D, t0), Step::Acquire);
        // Not renewed for the whole duration, as seen on our own clock.
        assert_eq!(decide(Some("other"), "me", t0, D, t0 + D), Step::Acquire);
    }
}
