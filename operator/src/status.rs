//! What an UploadPolicy's status should say, from what the operator knows: the
//! policy's compile outcome and how many ready proxies serve the config that
//! includes it. Pure: the controller writes the result only when it differs
//! from what is there (`needs_write`), and unchanged conditions keep their
//! `lastTransitionTime`, so status never flaps and no patch is timestamp-only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use sluice_policy::crd::ProxiesStatus;
use sluice_policy::{Outcome, UploadPolicyStatus};

pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";

/// The proxies the operator pushes to, as far as this policy is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Ready proxy pods.
    pub ready: u32,
    /// Ready proxy pods that answered with the desired config version.
    pub synced: u32,
}

/// Everything the status is computed from.
pub struct Facts<'a> {
    pub generation: i64,
    pub outcome: &'a Outcome,
    /// `fs`, `http` or `s3`.
    pub backend: &'a str,
    /// The version of the config that includes this generation (when accepted).
    pub desired_version: &'a str,
    pub fleet: Fleet,
}

/// The status to hold, given the current one (`now` stamps only conditions that change).
pub fn desired(
    current: Option<&UploadPolicyStatus>,
    f: &Facts<'_>,
    now: Time,
) -> UploadPolicyStatus {
    let old = |t: &str| current.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
    let accepted = matches!(f.outcome, Outcome::Accepted);
    let accepted_cond = condition(
        old(ACCEPTED),
        ACCEPTED,
        accepted,
        f.outcome.reason(),
        &f.outcome.message(),
        f.generation,
        &now,
    );
    let (programmed, reason, message) = match (accepted, f.fleet) {
        (false, _) => (
            false,
            "NotAccepted",
            "the policy is not part of the proxy configuration (see Accepted)".to_string(),
        ),
        (true, Fleet { ready: 0, .. }) => (
            false,
            "NoProxies",
            "no ready proxy pod to serve the policy".to_string(),
        ),
        (true, Fleet { ready, synced }) if synced >= ready => (
            true,
            "Programmed",
            format!(
                "all {ready} ready proxies serve config {}",
                f.desired_version
            ),
        ),
        (true, Fleet { ready, synced }) => (
            false,
            "Pending",
            format!(
                "{synced} of {ready} ready proxies serve config {}",
                f.desired_version
            ),
        ),
    };
    let programmed_cond = condition(
        old(PROGRAMMED),
        PROGRAMMED,
        programmed,
        reason,
        &message,
        f.generation,
        &now,
    );
    UploadPolicyStatus {
        observed_generation: Some(f.generation),
        conditions: vec![accepted_cond, programmed_cond],
        proxies: Some(ProxiesStatus {
            ready: f.fleet.ready,
            synced: if accepted { f.fleet.synced } else { 0 },
        }),
        config_version: accepted.then(|| f.desired_version.to_string()),
        backend: Some(f.backend.to_string()),
    }
}

/// Whether `desired` says anything `current` does not.
pub fn needs_write(current: Option<&UploadPolicyStatus>, desired: &UploadPolicyStatus) -> bool {
    current != Some(desired)
}

fn condition(
    old: Option<&Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // The time of the last change of status, not of the last write.
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(generation),
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
    }

    fn facts(outcome: &Outcome, ready: u32, synced: u32) -> Facts<'_> {
        Facts {
            generation: 3,
            outcome,
            backend: "fs",
            desired_version: "abc",
            fleet: Fleet { ready, synced },
        }
    }

    fn cond<'a>(s: &'a UploadPolicyStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn accepted_and_on_every_ready_proxy_is_programmed() {
        let ok = Outcome::Accepted;
        let s = desired(None, &facts(&ok, 2, 2), at(10));
        assert_eq!(cond(&s, ACCEPTED).status, "True");
        assert_eq!(cond(&s, PROGRAMMED).status, "True");
        assert_eq!(cond(&s, PROGRAMMED).observed_generation, Some(3));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            s.proxies,
            Some(ProxiesStatus {
                ready: 2,
                synced: 2
            })
        );
        assert_eq!(s.config_version.as_deref(), Some("abc"));
        assert_eq!(s.backend.as_deref(), Some("fs"));
    }

    #[test]
    fn programmed_waits_for_every_ready_proxy_and_needs_one() {
        let ok = Outcome::Accepted;
        let s = desired(None, &facts(&ok, 2, 1), at(10));
        assert_eq!(cond(&s, PROGRAMMED).status, "False");
        assert_eq!(cond(&s, PROGRAMMED).reason, "Pending");
        assert!(cond(&s, PROGRAMMED).message.contains("1 of 2"));
        let s = desired(None, &facts(&ok, 0, 0), at(10));
        assert_eq!(cond(&s, PROGRAMMED).reason, "NoProxies");
    }

    #[test]
    fn refused_policies_say_why_and_are_not_programmed() {
        for (o, reason) in [
            (Outcome::Invalid("pathPrefix must start".into()), "Invalid"),
            (Outcome::Conflicted("default/older".into()), "Conflicted"),
            (
                Outcome::SecretNotFound("secret keys missing".into()),
                "SecretNotFound",
            ),
        ] {
            let s = desired(None, &facts(&o, 2, 2), at(10));
            assert_eq!(cond(&s, ACCEPTED).status, "False");
            assert_eq!(cond(&s, ACCEPTED).reason, reason);
            assert_eq!(cond(&s, PROGRAMMED).reason, "NotAccepted");
            assert_eq!(s.config_version, None);
            assert_eq!(
                s.proxies,
                Some(ProxiesStatus {
                    ready: 2,
                    synced: 0
                })
            );
        }
    }

    #[test]
    fn nothing_to_write_when_nothing_changed_however_late() {
        let ok = Outcome::Accepted;
        let first = desired(None, &facts(&ok, 2, 2), at(10));
        let again = desired(Some(&first), &facts(&ok, 2, 2), at(99));
        assert!(!needs_write(Some(&first), &again));
        assert_eq!(cond(&again, ACCEPTED).last_transition_time, at(10));
    }

    #[test]
    fn a_transition_moves_only_the_condition_that_changed() {
        let ok = Outcome::Accepted;
        let synced = desired(None, &facts(&ok, 2, 2), at(10));
        let pending = desired(Some(&synced), &facts(&ok, 3, 2), at(20));
        assert!(needs_write(Some(&synced), &pending));
        assert_eq!(cond(&pending, ACCEPTED).last_transition_time, at(10));
        assert_eq!(cond(&pending, PROGRAMMED).last_transition_time, at(20));
        // Same status, new counts: written (proxies changed), time kept.
        let more = desired(Some(&pending), &facts(&ok, 3, 1), at(30));
        assert!(needs_write(Some(&pending), &more));
        assert_eq!(cond(&more, PROGRAMMED).last_transition_time, at(20));
    }
}
