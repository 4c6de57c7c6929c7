//! Desired versus served, per proxy pod: which pods need a push now, which
//! wait for their backoff, and how many ready pods serve the desired config.
//! Pure bookkeeping (time is passed in); the controller does the pushing.
//!
//! ```text
//!   set_desired(v) --------------------------> every reachable pod not serving v is due
//!   pod_seen(reachable: false -> true) ------> due at once (a new pod gets pushed first thing)
//!   pushed(Ok(v)) -> served = v              pushed(Err) -> due again after the backoff
//! ```
//!
//! Reachable (running, with an IP, not terminating) and ready are told apart:
//! a proxy that boots with no config is running but not ready (its /readyz
//! waits for a config), so the push must not wait for readiness or the two
//! would wait on each other. `Programmed` counts ready pods only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::status::Fleet;

/// First retry delay after a failed push; doubles per failure up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Pod {
    admin: SocketAddr,
    /// Running with an IP and not terminating: worth pushing to.
    reachable: bool,
    /// Its Ready condition: what `Programmed` counts.
    ready: bool,
    /// The version the pod last said it serves.
    served: Option<String>,
    failures: u32,
    not_before: Instant,
    in_flight: bool,
}

#[derive(Debug, Default)]
pub struct Tracker {
    desired: Option<String>,
    pods: BTreeMap<String, Pod>,
}

/// A push to make now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub pod: String,
    pub admin: SocketAddr,
    pub version: String,
}

impl Tracker {
    pub fn desired(&self) -> Option<&str> {
        self.desired.as_deref()
    }

    pub fn set_desired(&mut self, version: &str, now: Instant) {
        if self.desired.as_deref() == Some(version) {
            return;
        }
        self.desired = Some(version.to_string());
        for p in self.pods.values_mut() {
            // A new version is worth trying at once, whatever the last one did.
            p.failures = 0;
            p.not_before = now;
        }
    }

    /// A pod as the API server shows it (its IP and the admin port, and readiness).
    pub fn pod_seen(
        &mut self,
        name: &str,
        admin: SocketAddr,
        reachable: bool,
        ready: bool,
        now: Instant,
    ) {
        let ready = ready && reachable;
        let p = self.pods.entry(name.to_string()).or_insert(Pod {
            admin,
            reachable: false,
            ready: false,
            served: None,
            failures: 0,
            not_before: now,
            in_flight: false,
        });
        if p.admin != admin {
            // A new pod behind the same name (restarted elsewhere): it serves nothing we know.
            p.admin = admin;
            p.served = None;
        }
        if reachable && !p.reachable {
            p.failures = 0;
            p.not_before = now;
        }
        if !reachable {
            // A pod that went away may come back with anything; push again when it is back.
            p.served = None;
        }
        p.reachable = reachable;
        p.ready = ready;
    }

    pub fn pod_names(&self) -> impl Iterator<Item = &str> {
        self.pods.keys().map(String::as_str)
    }

    /// Whether a push is in flight or due now: its outcome is moments away.
    pub fn busy(&self, now: Instant) -> bool {
        let Some(version) = self.desired.as_deref() else {
            return false;
        };
        self.pods.values().any(|p| {
            p.in_flight
                || p.reachable && p.served.as_deref() != Some(version) && p.not_before <= now
        })
    }

    pub fn pod_gone(&mut self, name: &str) {
        self.pods.remove(name);
    }

    /// Pushes to start now; each is marked in flight until `pushed`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let Some(version) = self.desired.clone() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, p) in &mut self.pods {
            if p.reachable
                && !p.in_flight
                && p.served.as_deref() != Some(&version)
                && p.not_before <= now
            {
                p.in_flight = true;
                out.push(Due {
                    pod: name.clone(),
                    admin: p.admin,
                    version: version.clone(),
                });
            }
        }
        out
    }

    /// The outcome of a push (`Ok`: the version the pod now serves).
    pub fn pushed(&mut self, pod: &str, result: Result<String, ()>, now: Instant) {
        let Some(p) = self.pods.get_mut(pod) else {
            return;
        };
        p.in_flight = false;
        match result {
            Ok(v) => {
                p.served = Some(v);
                p.failures = 0;
            }
            Err(()) => {
                p.failures = p.failures.saturating_add(1);
                p.not_before = now + backoff(p.failures);
            }
        }
    }

    /// When the next retry falls due, if one waits.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let version = self.desired.as_deref()?;
        self.pods
            .values()
            .filter(|p| p.reachable && !p.in_flight && p.served.as_deref() != Some(version))
            .map(|p| p.not_before)
            .min()
    }

    pub fn fleet(&self) -> Fleet {
        let ready = self.pods.values().filter(|p| p.ready);
        let synced = ready
            .clone()
            .filter(|p| p.served.is_some() && p.served.as_deref() == self.desired.as_deref())
            .count();
        Fleet {
            ready: ready.count() as u32,
            synced: synced as u32,
        }
    }
}

/// Delay before retry number `failures` (1-based): 100 ms, 200 ms, ... capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * (1u32 << shift)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 9901))
    }

    #[test]
    fn a_new_version_is_due_on_every_ready_pod_once() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.pod_seen("a", addr(2), true, true, t0);
        t.pod_seen("b", addr(3), true, true, t0);
        t.pod_seen("c", addr(4), false, false, t0);
        assert!(t.take_due(t0).is_empty(), "no desired version yet");
        t.set_desired("v1", t0);
        let due = t.take_due(t0);
        assert_eq!(
            due.iter().map(|d| d.pod.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(t.take_due(t0).is_empty(), "in flight: not due twice");
        t.pushed("a", Ok("v1".into()), t0);
        t.pushed("b", Ok("v1".into()), t0);
        assert_eq!(
            t.fleet(),
            Fleet {
                ready: 2,
                synced: 2
            }
        );
        assert!(t.take_due(t0).is_empty());
        assert_eq!(t.next_wakeup(), None);
    }

    #[test]
    fn failures_back_off_and_a_new_version_resets_them() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.pod_seen("a", addr(2), true, true, t0);
        t.set_desired("v1", t0);
        assert_eq!(t.take_due(t0).len(), 1);
        t.pushed("a", Err(()), t0);
        assert!(t.take_due(t0).is_empty());
        assert_eq!(t.next_wakeup(), Some(t0 + BACKOFF_MIN));
        assert_eq!(t.take_due(t0 + BACKOFF_MIN).len(), 1);
        t.pushed("a", Err(()), t0 + BACKOFF_MIN);
        assert_eq!(t.next_wakeup(), Some(t0 + BACKOFF_MIN * 3));
        assert_eq!(
            t.fleet(),
            Fleet {
                ready: 1,
                synced: 0
            }
        );
        t.set_desired("v2", t0 + BACKOFF_MIN);
        assert_eq!(t.take_due(t0 + BACKOFF_MIN).len(), 1);
    }

    #[test]
    fn a_pod_turning_ready_is_pushed_at_once() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.set_desired("v1", t0);
        t.pod_seen("a", addr(2), false, false, t0);
        assert!(t.take_due(t0).is_empty());
        t.pod_seen("a", addr(2), true, true, t0);
        assert_eq!(t.take_due(t0)[0].admin, addr(2));
        t.pushed("a", Ok("v1".into()), t0);
        // It went unready (restart?): whatever it serves now is unknown, so it is
        // pushed again when ready, and does not count as synced meanwhile.
        t.pod_seen("a", addr(2), false, false, t0);
        assert_eq!(
            t.fleet(),
            Fleet {
                ready: 0,
                synced: 0
            }
        );
        t.pod_seen("a", addr(5), true, true, t0);
        assert_eq!(t.take_due(t0)[0].admin, addr(5));
        t.pod_gone("a");
        assert_eq!(t.fleet(), Fleet::default());
    }

    #[test]
    fn a_running_pod_without_config_is_pushed_before_it_is_ready() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.set_desired("v1", t0);
        // Booted with no config: running, /readyz says 503, so not Ready.
        t.pod_seen("a", addr(2), true, false, t0);
        assert_eq!(t.take_due(t0).len(), 1, "pushed while not ready");
        t.pushed("a", Ok("v1".into()), t0);
        assert_eq!(t.fleet(), Fleet::default(), "not counted until Ready");
        t.pod_seen("a", addr(2), true, true, t0);
        assert!(t.take_due(t0).is_empty(), "already serves v1");
        assert_eq!(
            t.fleet(),
            Fleet {
                ready: 1,
                synced: 1
            }
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
