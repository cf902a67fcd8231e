//! Deciding a request once its user is known: the route's [`Access`] against what the
//! user holds, from this VM's decision cache or from one batched callout.
//!
//! Decisions carry the policy service's epoch. The root context polls it; when it
//! moves, every cached decision goes. Decisions are used only while the epoch was
//! confirmed recently, so a VM that cannot reach the service stops trusting them
//! (fails closed) instead of serving revoked grants.

use std::collections::HashSet;

use crate::cache::TokenCache;
use crate::mlflow::Access;
use crate::permission::{Requirement, Source, Target};
use crate::reply::Reply;
use crate::wire::{DecideRequest, DecideResponse, EpochResponse, TargetAnswer};

/// Cached decisions older than this are dropped even when the epoch has not moved:
/// a bound should the epoch ever fail to move on a change.
const DECISION_TTL_MS: u64 = 300_000;

/// Counters, flushed to Envoy metrics by the root context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuthzStats {
    pub authz_allowed: u64,
    pub authz_denied: u64,
    pub decision_cache_hits: u64,
    pub decision_cache_misses: u64,
    pub decide_errors: u64,
    pub epoch_changes: u64,
}

impl AuthzStats {
    pub fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("authz_allowed", self.authz_allowed),
            ("authz_denied", self.authz_denied),
            ("decision_cache_hits", self.decision_cache_hits),
            ("decision_cache_misses", self.decision_cache_misses),
            ("decide_errors", self.decide_errors),
            ("epoch_changes", self.epoch_changes),
        ]
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 403 (or 503 when the service's answer was unusable).
    Deny(Reply),
    /// Ask the policy service (one callout), then call [`Authorizer::answered`].
    Ask(DecideRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    username: String,
    target: Target,
}

/// One per VM.
pub struct Authorizer {
    epoch: Option<u64>,
    /// When the epoch was last confirmed by the service (ms).
    confirmed_at: u64,
    /// How long a confirmation lasts.
    stale_after_ms: u64,
    decisions: TokenCache<Key, TargetAnswer>,
    admins: TokenCache<String, bool>,
    pub stats: AuthzStats,
}

impl Authorizer {
    pub fn new(max_entries: usize, epoch_poll_interval_ms: u64) -> Self {
        Authorizer {
            epoch: None,
            confirmed_at: 0,
            // Three missed polls, and never less than three seconds.
            stale_after_ms: epoch_poll_interval_ms.saturating_mul(3).max(3_000),
            decisions: TokenCache::new(max_entries),
            admins: TokenCache::new(max_entries.min(4096)),
            stats: AuthzStats::default(),
        }
    }

    fn fresh(&self, now_ms: u64) -> bool {
        self.epoch.is_some() && now_ms.saturating_sub(self.confirmed_at) <= self.stale_after_ms
    }

    /// The service said the epoch is `epoch` at `now_ms`. Returns whether
    /// the cached decisions were dropped.
    pub fn epoch_seen(&mut self, epoch: u64, now_ms: u64) -> bool {
        let moved = self.epoch.is_some_and(|e| e != epoch);
        if self.epoch != Some(epoch) {
            self.decisions.clear();
            self.admins.clear();
            if moved {
                self.stats.epoch_changes += 1;
            }
            self.epoch = Some(epoch);
        }
        self.confirmed_at = self.confirmed_at.max(now_ms);
        moved
    }

    /// An answer of the epoch endpoint.
    pub fn epoch_polled(&mut self, status: u32, body: &[u8], now_ms: u64) -> Result<(), String> {
        if status != 200 {
            return Err(format!("policy epoch: status {status}"));
        }
        let answer: EpochResponse = serde_json::from_slice(body)
            .map_err(|e| format!("policy epoch: unreadable answer: {e}"))?;
        self.epoch_seen(answer.epoch, now_ms);
        Ok(())
    }

    /// Decides from the cache, or says what to ask.
    pub fn decide(&mut self, username: &str, access: &Access, now_ms: u64) -> Verdict {
        let fresh = self.fresh(now_ms);
        let admin = if fresh {
            self.admins.get(username, now_ms)
        } else {
            None
        };
        if admin == Some(true) {
            return self.allow();
        }
        let requirements = match access {
            Access::Authenticated => return self.allow(),
            Access::AdminOnly { why } => {
                return match admin {
                    Some(_) => self.deny(Reply::forbidden(why)),
                    None => self.ask(username, Vec::new()),
                }
            }
            Access::Resources(requirements) => requirements,
        };
        if requirements.is_empty() {
            return self.allow();
        }
        let mut answers = Vec::with_capacity(requirements.len());
        for requirement in requirements {
            let cached = if fresh && admin.is_some() {
                self.decisions.get(
                    &Key {
                        username: username.to_string(),
                        target: requirement.target.clone(),
                    },
                    now_ms,
                )
            } else {
                None
            };
            match cached {
                Some(answer) => answers.push(answer),
                None => {
                    // One miss asks for every target of the request: one answer, read
                    // at one epoch, decides it.
                    self.stats.decision_cache_misses += 1;
                    let mut seen = HashSet::new();
                    let targets = requirements
                        .iter()
                        .map(|r| r.target.clone())
                        .filter(|t| seen.insert(t.clone()))
                        .collect();
                    return self.ask(username, targets);
                }
            }
        }
        self.stats.decision_cache_hits += 1;
        self.judge(requirements, &answers)
    }

    /// The service's answer to `asked`: caches it and decides.
    pub fn answered(
        &mut self,
        asked: &DecideRequest,
        access: &Access,
        status: u32,
        body: &[u8],
        now_ms: u64,
    ) -> Verdict {
        let response = match read_answer(asked, status, body) {
            Ok(r) => r,
            Err(e) => {
                self.stats.decide_errors += 1;
                return Verdict::Deny(Reply::unavailable(&format!(
                    "permissions cannot be checked: {e}"
                )));
            }
        };
        // An answer read at an older epoch than ours decides this request (it was
        // current when read) but is not kept.
        let keep = self.epoch.is_none_or(|e| response.epoch >= e);
        if keep {
            self.epoch_seen(response.epoch, now_ms);
            let until = now_ms + DECISION_TTL_MS;
            self.admins
                .insert(asked.username.clone(), response.admin, until, now_ms);
            for (target, answer) in asked.targets.iter().zip(&response.answers) {
                self.decisions.insert(
                    Key {
                        username: asked.username.clone(),
                        target: target.clone(),
                    },
                    answer.clone(),
                    until,
                    now_ms,
                );
            }
        }
        if response.admin {
            return self.allow();
        }
        match access {
            Access::Authenticated => self.allow(),
            Access::AdminOnly { why } => self.deny(Reply::forbidden(why)),
            Access::Resources(requirements) => {
                let mut answers = Vec::with_capacity(requirements.len());
                for requirement in requirements {
                    match asked
                        .targets
                        .iter()
                        .position(|t| *t == requirement.target)
                        .and_then(|i| response.answers.get(i))
                    {
                        Some(a) => answers.push(a.clone()),
                        None => {
                            self.stats.decide_errors += 1;
                            return Verdict::Deny(Reply::unavailable(
                                "permissions cannot be checked: the policy service left a target unanswered",
                            ));
                        }
                    }
                }
                self.judge(requirements, &answers)
            }
        }
    }

    /// For a route whose answer is filtered: allow at once when the user's admin
    /// status is known, else ask for it (a callout with no targets). So admins skip
    /// filtering, and a policy service that is down is a clean 503 before MLflow is
    /// asked, not a broken answer after.
    pub fn decide_listing(&mut self, username: &str, now_ms: u64) -> Verdict {
        if self.fresh(now_ms) && self.admins.get(username, now_ms).is_some() {
            return self.allow();
        }
        self.ask(username, Vec::new())
    }

    /// Whether the user was an admin at the current epoch, if known (for skipping
    /// response filtering).
    pub fn is_admin(&self, username: &str, now_ms: u64) -> bool {
        self.fresh(now_ms) && self.admins.get(username, now_ms) == Some(true)
    }

    fn judge(&mut self, requirements: &[Requirement], answers: &[TargetAnswer]) -> Verdict {
        for (requirement, answer) in requirements.iter().zip(answers) {
            if answer.source == Source::Unresolved {
                if requirement.missing_ok {
                    continue;
                }
                return self.deny(Reply::forbidden(&format!(
                    "permission denied: {} does not exist, so {} on it cannot be granted",
                    requirement.target, requirement.need
                )));
            }
            if !answer.permission.allows(requirement.need) {
                let resource = match &answer.resource {
                    Some(r) => format!("{} {}", r.kind.as_str(), quote_name(r.kind, &r.id)),
                    None => requirement.target.to_string(),
                };
                return self.deny(Reply::forbidden(&format!(
                    "permission denied: {} permission on {resource} is needed; the user holds {} (from {})",
                    requirement.need,
                    answer.permission,
                    answer.source.as_str()
                )));
            }
        }
        self.allow()
    }

    fn allow(&mut self) -> Verdict {
        self.stats.authz_allowed += 1;
        Verdict::Allow
    }

    fn deny(&mut self, reply: Reply) -> Verdict {
        self.stats.authz_denied += 1;
        Verdict::Deny(reply)
    }

    fn ask(&mut self, username: &str, targets: Vec<Target>) -> Verdict {
        Verdict::Ask(DecideRequest {
            username: username.to_string(),
            targets,
        })
    }
}

fn quote_name(kind: crate::permission::ResourceKind, id: &str) -> String {
    match kind {
        crate::permission::ResourceKind::Experiment => id.to_string(),
        _ => format!("{id:?}"),
    }
}

fn read_answer(asked: &DecideRequest, status: u32, body: &[u8]) -> Result<DecideResponse, String> {
    match status {
        200 => {}
        0 => return Err("the policy service did not answer in time".into()),
        other => {
            let message = serde_json::from_slice::<crate::wire::ErrorBody>(body)
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(format!("the policy service answered {other} {message}")
                .trim_end()
                .to_string());
        }
    }
    let response: DecideResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the policy service's answer is unreadable: {e}"))?;
    if response.answers.len() != asked.targets.len() {
        return Err(format!(
            "the policy service answered {} of {} targets",
            response.answers.len(),
            asked.targets.len()
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::{Capability, Permission, ResourceKind};
    use crate::wire::ResolvedResource;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn exp(id: &str) -> Target {
        Target::Experiment { id: id.into() }
    }

    fn needs(target: Target, need: Capability) -> Access {
        Access::Resources(vec![Requirement::new(target, need)])
    }

    fn answer(permission: Permission, source: Source) -> TargetAnswer {
        TargetAnswer {
            permission,
            source,
            resource: Some(ResolvedResource {
                kind: ResourceKind::Experiment,
                id: "1".into(),
            }),
        }
    }

    fn respond(epoch: u64, admin: bool, answers: Vec<TargetAnswer>) -> Vec<u8> {
        serde_json::to_vec(&DecideResponse {
            epoch,
            admin,
            answers,
        })
        .unwrap()
    }

    /// Asks, answers, and returns the final verdict.
    fn round(
        a: &mut Authorizer,
        access: &Access,
        now: u64,
        epoch: u64,
        admin: bool,
        answers: Vec<TargetAnswer>,
    ) -> Verdict {
        match a.decide("bob", access, now) {
            Verdict::Ask(asked) => {
                let body = respond(epoch, admin, answers);
                a.answered(&asked, access, 200, &body, now)
            }
            other => other,
        }
    }

    #[test]
    fn a_cached_decision_needs_no_callout_until_the_epoch_moves() {
        let mut a = Authorizer::new(100, 1000);
        let access = needs(exp("1"), Capability::Read);
        let v = round(
            &mut a,
            &access,
            0,
            7,
            false,
            vec![answer(Permission::Read, Source::User)],
        );
        assert_eq!(v, Verdict::Allow);
        assert_eq!(a.decide("bob", &access, 500), Verdict::Allow);
        assert_eq!(a.stats.decision_cache_hits, 1);
        // Another user does not share bob's decision.
        assert!(matches!(a.decide("eve", &access, 500), Verdict::Ask(_)));
        a.epoch_seen(8, 600);
        assert!(matches!(a.decide("bob", &access, 700), Verdict::Ask(_)));
    }

    #[test]
    fn decisions_are_not_used_once_the_epoch_goes_unconfirmed() {
        let mut a = Authorizer::new(100, 1000);
        let access = needs(exp("1"), Capability::Read);
        round(
            &mut a,
            &access,
            0,
            7,
            false,
            vec![answer(Permission::Read, Source::User)],
        );
        assert_eq!(a.decide("bob", &access, 3_000), Verdict::Allow);
        assert!(matches!(a.decide("bob", &access, 3_001), Verdict::Ask(_)));
        a.epoch_polled(200, br#"{"epoch":7}"#, 3_500).unwrap();
        assert_eq!(a.decide("bob", &access, 3_600), Verdict::Allow);
    }

    #[test]
    fn a_weaker_permission_is_a_403_naming_resource_and_need() {
        let mut a = Authorizer::new(100, 1000);
        let access = needs(exp("1"), Capability::Edit);
        let v = round(
            &mut a,
            &access,
            0,
            1,
            false,
            vec![answer(Permission::Read, Source::Group)],
        );
        let Verdict::Deny(reply) = v else {
            panic!("{v:?}")
        };
        assert_eq!(reply.status, 403);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error_code"], "PERMISSION_DENIED");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("EDIT permission on experiment 1"),
            "{message}"
        );
        assert!(message.contains("READ (from group)"), "{message}");
        // The cached answer denies too, without a callout.
        assert!(matches!(a.decide("bob", &access, 10), Verdict::Deny(_)));
    }

    #[test]
    fn an_explicit_deny_and_an_unresolved_target_deny() {
        let mut a = Authorizer::new(100, 1000);
        let access = needs(exp("1"), Capability::Read);
        let v = round(
            &mut a,
            &access,
            0,
            1,
            false,
            vec![answer(Permission::NoPermissions, Source::User)],
        );
        assert!(matches!(v, Verdict::Deny(r) if r.status == 403));
        let run = needs(Target::Run { id: "r".into() }, Capability::Read);
        let missing = TargetAnswer {
            permission: Permission::NoPermissions,
            source: Source::Unresolved,
            resource: None,
        };
        let v = round(&mut a, &run, 0, 1, false, vec![missing.clone()]);
        let Verdict::Deny(r) = v else { panic!() };
        assert!(r.body.contains("run r does not exist"), "{}", r.body);
        // Only GetExperimentByName lets a missing target through (MLflow answers 404).
        let by_name = Access::Resources(vec![Requirement {
            target: Target::ExperimentName { name: "x".into() },
            need: Capability::Read,
            missing_ok: true,
        }]);
        assert_eq!(
            round(&mut a, &by_name, 0, 1, false, vec![missing]),
            Verdict::Allow
        );
    }

    #[test]
    fn admins_pass_everything_and_others_not_admin_only_routes() {
        let mut a = Authorizer::new(100, 1000);
        let admin_only = Access::AdminOnly {
            why: "webhooks are for admins".into(),
        };
        let v = round(&mut a, &admin_only, 0, 1, false, vec![]);
        assert!(matches!(&v, Verdict::Deny(r) if r.status == 403 && r.body.contains("webhooks")));
        // Known non-admin now: no second callout.
        assert!(matches!(a.decide("bob", &admin_only, 1), Verdict::Deny(_)));
        let mut a = Authorizer::new(100, 1000);
        assert_eq!(
            round(&mut a, &admin_only, 0, 1, true, vec![]),
            Verdict::Allow
        );
        let edit = needs(exp("9"), Capability::Manage);
        assert_eq!(a.decide("bob", &edit, 1), Verdict::Allow);
        assert!(a.is_admin("bob", 1));
    }

    #[test]
    fn a_filtered_search_learns_the_users_admin_status_first() {
        let mut a = Authorizer::new(100, 1000);
        let all = Access::Resources(vec![]);
        let Verdict::Ask(asked) = a.decide_listing("bob", 0) else {
            panic!()
        };
        assert!(asked.targets.is_empty());
        let body = respond(1, false, vec![]);
        assert_eq!(a.answered(&asked, &all, 200, &body, 0), Verdict::Allow);
        assert_eq!(a.decide_listing("bob", 1), Verdict::Allow);
        assert!(!a.is_admin("bob", 1));
        // The service down: a 503 before MLflow is asked.
        let Verdict::Ask(asked) = a.decide_listing("eve", 1) else {
            panic!()
        };
        assert!(matches!(a.answered(&asked, &all, 0, b"", 1), Verdict::Deny(r) if r.status == 503));
    }

    #[test]
    fn one_callout_asks_each_missing_target_once() {
        let mut a = Authorizer::new(100, 1000);
        let access = Access::Resources(vec![
            Requirement::new(exp("1"), Capability::Read),
            Requirement::new(exp("1"), Capability::Edit),
            Requirement::new(exp("2"), Capability::Read),
        ]);
        let Verdict::Ask(asked) = a.decide("bob", &access, 0) else {
            panic!()
        };
        assert_eq!(asked.targets, vec![exp("1"), exp("2")]);
        let body = respond(
            1,
            false,
            vec![
                answer(Permission::Edit, Source::User),
                answer(Permission::Read, Source::Regex),
            ],
        );
        assert_eq!(a.answered(&asked, &access, 200, &body, 0), Verdict::Allow);
    }

    #[test]
    fn a_partly_cached_request_asks_for_all_its_targets() {
        let mut a = Authorizer::new(100, 1000);
        let one = needs(exp("1"), Capability::Read);
        round(
            &mut a,
            &one,
            0,
            1,
            false,
            vec![answer(Permission::Read, Source::User)],
        );
        let both = Access::Resources(vec![
            Requirement::new(exp("1"), Capability::Read),
            Requirement::new(exp("2"), Capability::Read),
        ]);
        let Verdict::Ask(asked) = a.decide("bob", &both, 1) else {
            panic!()
        };
        assert_eq!(asked.targets, vec![exp("1"), exp("2")]);
        let body = respond(
            1,
            false,
            vec![
                answer(Permission::Read, Source::User),
                answer(Permission::Read, Source::Group),
            ],
        );
        assert_eq!(a.answered(&asked, &both, 200, &body, 1), Verdict::Allow);
    }

    #[test]
    fn errors_are_503_and_never_cached() {
        let mut a = Authorizer::new(100, 1000);
        let access = needs(exp("1"), Capability::Read);
        for (status, body) in [
            (0, &b""[..]),
            (500, br#"{"error_code":"X","message":"mlflow is down"}"#),
            (200, b"not json"),
            (200, br#"{"epoch":1,"admin":false,"answers":[]}"#),
        ] {
            let Verdict::Ask(asked) = a.decide("bob", &access, 0) else {
                panic!()
            };
            let v = a.answered(&asked, &access, status, body, 0);
            assert!(
                matches!(&v, Verdict::Deny(r) if r.status == 503),
                "{status}: {v:?}"
            );
        }
        assert!(matches!(a.decide("bob", &access, 0), Verdict::Ask(_)));
        assert_eq!(a.stats.decide_errors, 4);
    }

    #[test]
    fn an_answer_from_an_older_epoch_decides_but_is_not_kept() {
        let mut a = Authorizer::new(100, 1000);
        a.epoch_seen(5, 0);
        let access = needs(exp("1"), Capability::Read);
        let v = round(
            &mut a,
            &access,
            0,
            4,
            false,
            vec![answer(Permission::Read, Source::User)],
        );
        assert_eq!(v, Verdict::Allow);
        assert!(matches!(a.decide("bob", &access, 1), Verdict::Ask(_)));
    }
}
