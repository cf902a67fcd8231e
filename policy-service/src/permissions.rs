//! What a user holds on a resource, and why: the resolution of the system we replace
//! (permissions.md §5.3), without workspaces.
//!
//! 1. A deactivated user holds nothing anywhere; an admin passes everything (the
//!    answer says `admin`; the permissions are still worked out, to explain).
//! 2. The grant sources are walked in `PERMISSION_SOURCE_ORDER` (default
//!    `user,group,regex,group-regex`); the first that holds a grant decides, even when a
//!    later one would give more:
//!    - `user`: the user's own grant on the resource;
//!    - `group`: the strongest grant of the user's groups (NO_PERMISSIONS beats all);
//!    - `regex` / `group-regex`: the user's (their groups') pattern grants of the
//!      resource's kind, matched as Python's `re.match` (anchored at the start only)
//!      against the experiment's or model's name, by (priority, id): only the best
//!      priority with a match counts, and in it NO_PERMISSIONS wins, else the most
//!      capable.
//! 3. Nothing: `DEFAULT_MLFLOW_PERMISSION` (source `fallback`).
//!
//! A target is first resolved to the resource holding its grants through MLflow
//! (`crate::mlflow`): a run, trace or logged model to its experiment, a name to an
//! experiment, a registered model to a model or a prompt. One that does not exist is
//! `unresolved`: NO_PERMISSIONS. An experiment's name is asked for only when a pattern
//! grant has to be matched against it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlflow_edge_authz::permission::{Permission, ResourceKind, Source, Target};
use mlflow_edge_authz::wire::{DecideResponse, ResolvedResource, TargetAnswer};
use regex::Regex;
use thiserror::Error;

use crate::app::AppState;
use crate::grants::{GrantKind, PatternGrant, Subject};
use crate::mlflow::MlflowError;
use crate::store::StoreError;
use crate::web::ApiError;

/// Compiled pattern grants kept at most (the map is emptied when full).
const COMPILED_PATTERNS: usize = 4096;

#[derive(Debug, Error)]
pub enum DecideError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// MLflow could not say what a target is: never a decision.
    #[error("cannot resolve {target}: {source}")]
    Mlflow {
        target: String,
        #[source]
        source: MlflowError,
    },
}

impl From<DecideError> for ApiError {
    fn from(err: DecideError) -> Self {
        match err {
            DecideError::Store(e) => ApiError::from(e),
            DecideError::Mlflow { .. } => {
                tracing::warn!("{err}");
                ApiError::Unavailable(err.to_string())
            }
        }
    }
}

/// A pattern as the system we replace matches it: Python's `re.match`, anchored at
/// the start of the name only. The error is the regex crate's own message.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})")).map_err(|e| e.to_string())
}

/// Compiled pattern grants, shared by every request (a bounded map).
#[derive(Default)]
pub struct PatternCache {
    compiled: Mutex<HashMap<String, Option<Arc<Regex>>>>,
}

impl PatternCache {
    /// Does `pattern` match `name`? A pattern that does not compile (the API refuses
    /// those; one written to the database by hand) matches nothing.
    fn is_match(&self, pattern: &str, name: &str) -> bool {
        let regex = match self.compiled.lock() {
            Ok(mut compiled) => {
                if let Some(hit) = compiled.get(pattern) {
                    hit.clone()
                } else {
                    let regex = match compile(pattern) {
                        Ok(regex) => Some(Arc::new(regex)),
                        Err(e) => {
                            tracing::warn!(%pattern, "a pattern grant does not compile: {e}");
                            None
                        }
                    };
                    if compiled.len() >= COMPILED_PATTERNS {
                        compiled.clear();
                    }
                    compiled.insert(pattern.to_string(), regex.clone());
                    regex
                }
            }
            // A poisoned lock: compile without the cache.
            Err(_) => compile(pattern).ok().map(Arc::new),
        };
        regex.is_some_and(|r| r.is_match(name))
    }
}

fn answer(
    permission: Permission,
    source: Source,
    resource: Option<ResolvedResource>,
) -> TargetAnswer {
    TargetAnswer {
        permission,
        source,
        resource,
    }
}

fn unresolved() -> TargetAnswer {
    answer(Permission::NoPermissions, Source::Unresolved, None)
}

/// The best tier of `patterns` (sorted by priority, then id) with a match for
/// `name`: NO_PERMISSIONS if any match says so, else the most capable match.
fn tier_match(cache: &PatternCache, patterns: &[PatternGrant], name: &str) -> Option<Permission> {
    let mut best: Option<(i64, Permission)> = None;
    for pattern in patterns {
        if let Some((tier, _)) = best {
            if pattern.priority != tier {
                break;
            }
        }
        if !cache.is_match(&pattern.regex, name) {
            continue;
        }
        best = Some(match best {
            None => (pattern.priority, pattern.permission),
            Some((tier, held)) => (tier, held.strongest(pattern.permission)),
        });
    }
    best.map(|(_, permission)| permission)
}

/// The name grants patterns are matched against, when the caller knows it.
enum Name<'n> {
    Known(&'n str),
    /// An experiment's, asked of MLflow if a pattern needs it.
    OfExperiment,
}

/// Answers for one user, reading each thing once: their row, their patterns per
/// kind, each resource's answer. Short-lived: one decision request, one listing.
pub struct Checker<'a> {
    state: &'a AppState,
    username: String,
    /// `None`: no such user (a bearer user never seen): no groups, not an admin, no
    /// grants (grants name users by their row).
    subject: Option<Subject>,
    patterns: HashMap<(ResourceKind, bool), Vec<PatternGrant>>,
    answers: HashMap<(ResourceKind, String), TargetAnswer>,
}

impl<'a> Checker<'a> {
    /// `username` as stored: lower-case.
    pub async fn new(state: &'a AppState, username: &str) -> Result<Self, StoreError> {
        let username = username.to_lowercase();
        let subject = state.store.subject(&username).await?;
        Ok(Checker {
            state,
            username,
            subject,
            patterns: HashMap::new(),
            answers: HashMap::new(),
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// An active admin.
    pub fn is_admin(&self) -> bool {
        self.subject.is_some_and(|s| s.active && s.is_admin)
    }

    /// Deactivated users hold nothing.
    pub fn is_deactivated(&self) -> bool {
        self.subject.is_some_and(|s| !s.active)
    }

    /// What the user holds on what a request names.
    pub async fn target(&mut self, target: &Target) -> Result<TargetAnswer, DecideError> {
        if self.is_deactivated() {
            // The user's own state decides; nothing is looked up.
            return Ok(answer(Permission::NoPermissions, Source::User, None));
        }
        let state = self.state;
        let mlflow = &state.mlflow;
        let failed = |source: MlflowError| DecideError::Mlflow {
            target: target.to_string(),
            source,
        };
        match target {
            Target::Experiment { id } => self.experiment(id, None).await,
            Target::ExperimentName { name } => {
                match mlflow.experiment_by_name(name).await.map_err(failed)? {
                    Some(experiment) => {
                        self.experiment(&experiment.id, Some(&experiment.name))
                            .await
                    }
                    None => Ok(unresolved()),
                }
            }
            Target::Run { id } => match mlflow.experiment_of_run(id).await.map_err(failed)? {
                Some(experiment_id) => self.experiment(&experiment_id, None).await,
                None => Ok(unresolved()),
            },
            Target::Trace { id } => match mlflow.experiment_of_trace(id).await.map_err(failed)? {
                Some(experiment_id) => self.experiment(&experiment_id, None).await,
                None => Ok(unresolved()),
            },
            Target::LoggedModel { id } => {
                match mlflow
                    .experiment_of_logged_model(id)
                    .await
                    .map_err(failed)?
                {
                    Some(experiment_id) => self.experiment(&experiment_id, None).await,
                    None => Ok(unresolved()),
                }
            }
            Target::RegisteredModel { name } => {
                match mlflow.registered_model(name).await.map_err(failed)? {
                    Some(model) => {
                        let kind = if model.is_prompt {
                            ResourceKind::Prompt
                        } else {
                            ResourceKind::RegisteredModel
                        };
                        Ok(self.model(&model.name, kind).await?)
                    }
                    None => Ok(unresolved()),
                }
            }
        }
    }

    /// What the user holds on an experiment. `name`, when the caller knows it, spares
    /// asking MLflow for it (only needed to match pattern grants).
    pub async fn experiment(
        &mut self,
        id: &str,
        name: Option<&str>,
    ) -> Result<TargetAnswer, DecideError> {
        let name = match name {
            Some(name) => Name::Known(name),
            None => Name::OfExperiment,
        };
        self.resource(ResourceKind::Experiment, id, name).await
    }

    /// What the user holds on a registered model or a prompt (`kind`), by name.
    pub async fn model(
        &mut self,
        name: &str,
        kind: ResourceKind,
    ) -> Result<TargetAnswer, StoreError> {
        match self.resource(kind, name, Name::Known(name)).await {
            Ok(answer) => Ok(answer),
            Err(DecideError::Store(e)) => Err(e),
            // A known name is never looked up.
            Err(DecideError::Mlflow { .. }) => Ok(unresolved()),
        }
    }

    async fn resource(
        &mut self,
        kind: ResourceKind,
        key: &str,
        name: Name<'_>,
    ) -> Result<TargetAnswer, DecideError> {
        if self.is_deactivated() {
            return Ok(answer(Permission::NoPermissions, Source::User, None));
        }
        let memo = (kind, key.to_string());
        if let Some(known) = self.answers.get(&memo) {
            return Ok(known.clone());
        }
        let resource = ResolvedResource {
            kind,
            id: key.to_string(),
        };
        let decided = match self.walk(kind, key, name).await? {
            Some((permission, source)) => answer(permission, source, Some(resource)),
            None => unresolved(),
        };
        self.answers.insert(memo, decided.clone());
        Ok(decided)
    }

    /// The source walk; `None` when the experiment whose name a pattern needed does
    /// not exist.
    async fn walk(
        &mut self,
        kind: ResourceKind,
        key: &str,
        name: Name<'_>,
    ) -> Result<Option<(Permission, Source)>, DecideError> {
        let state = self.state;
        let settings = &state.settings;
        let fallback = Some((settings.default_mlflow_permission, Source::Fallback));
        let Some(subject) = self.subject else {
            return Ok(fallback);
        };
        let store = &state.store;
        let grant_kind = GrantKind::of(kind);
        let mut fetched_name: Option<String> = None;
        for source in &settings.permission_source_order {
            match source {
                Source::User => {
                    if let Some(held) = store.user_grant(subject.id, grant_kind, key).await? {
                        return Ok(Some((held, Source::User)));
                    }
                }
                Source::Group => {
                    let held = store
                        .group_grants_of_user(subject.id, grant_kind, key)
                        .await?
                        .into_iter()
                        .reduce(Permission::strongest);
                    if let Some(held) = held {
                        return Ok(Some((held, Source::Group)));
                    }
                }
                Source::Regex | Source::GroupRegex => {
                    let of_groups = *source == Source::GroupRegex;
                    if self
                        .patterns_of(subject.id, kind, of_groups)
                        .await?
                        .is_empty()
                    {
                        continue;
                    }
                    let name = match (&name, &fetched_name) {
                        (Name::Known(name), _) => name.to_string(),
                        (Name::OfExperiment, Some(name)) => name.clone(),
                        (Name::OfExperiment, None) => {
                            let target = || Target::Experiment { id: key.into() }.to_string();
                            match state.mlflow.experiment(key).await {
                                Ok(Some(experiment)) => {
                                    fetched_name = Some(experiment.name.clone());
                                    experiment.name
                                }
                                Ok(None) => return Ok(None),
                                Err(source) => {
                                    return Err(DecideError::Mlflow {
                                        target: target(),
                                        source,
                                    })
                                }
                            }
                        }
                    };
                    let patterns = self
                        .patterns
                        .get(&(kind, of_groups))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    if let Some(held) = tier_match(&state.patterns, patterns, &name) {
                        return Ok(Some((held, *source)));
                    }
                }
                // Not grant sources (settings refuse them in the order).
                Source::Fallback | Source::Unresolved => {}
            }
        }
        Ok(fallback)
    }

    /// The user's (or their groups') pattern grants of a kind, read once.
    async fn patterns_of(
        &mut self,
        user_id: i64,
        kind: ResourceKind,
        of_groups: bool,
    ) -> Result<&[PatternGrant], StoreError> {
        let key = (kind, of_groups);
        if !self.patterns.contains_key(&key) {
            let store = &self.state.store;
            let read = if of_groups {
                store.group_patterns_of_user(user_id, kind).await?
            } else {
                store.user_patterns(user_id, kind).await?
            };
            self.patterns.insert(key, read);
        }
        Ok(self
            .patterns
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default())
    }
}

/// The decision endpoint's work: the epoch (read first, so answers are never
/// newer-labelled than what they read), whether the user is an admin, and one answer
/// per target in the request's order (each distinct target resolved once).
pub async fn decide(
    state: &AppState,
    username: &str,
    targets: &[Target],
) -> Result<DecideResponse, DecideError> {
    let epoch = state.store.epoch().await?;
    let mut checker = Checker::new(state, username).await?;
    let mut seen: HashMap<&Target, TargetAnswer> = HashMap::new();
    let mut answers = Vec::with_capacity(targets.len());
    for target in targets {
        let decided = match seen.get(target) {
            Some(decided) => decided.clone(),
            None => {
                let decided = checker.target(target).await?;
                seen.insert(target, decided.clone());
                decided
            }
        };
        answers.push(decided);
    }
    Ok(DecideResponse {
        epoch,
        admin: checker.is_admin(),
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: i64, regex: &str, priority: i64, permission: Permission) -> PatternGrant {
        PatternGrant {
            id,
            regex: regex.into(),
            priority,
            permission,
        }
    }

    #[test]
    fn patterns_match_at_the_start_only_as_re_match_does() {
        let cache = PatternCache::default();
        assert!(cache.is_match("team-", "team-a/exp"));
        assert!(!cache.is_match("team-", "my-team-a"));
        assert!(cache.is_match(".*team-", "my-team-a"));
        // `|` stays inside the anchor.
        assert!(!cache.is_match("a|team", "my-team"));
        assert!(cache.is_match("a|team", "team"));
        // Not anchored at the end.
        assert!(cache.is_match("exp", "experiment"));
        assert!(!cache.is_match("(", "("), "a bad pattern matches nothing");
    }

    #[test]
    fn the_best_tier_with_a_match_decides() {
        use Permission::*;
        let cache = PatternCache::default();
        let patterns = vec![
            grant(1, "other", 1, Read),
            grant(2, "team", 5, Edit),
            grant(3, "team-a", 5, Read),
            grant(4, "team-a", 9, Manage),
        ];
        // Tier 5 is the best with a match; in it the most capable wins.
        assert_eq!(tier_match(&cache, &patterns, "team-a"), Some(Edit));
        assert_eq!(tier_match(&cache, &patterns, "nothing"), None);
        let patterns = vec![
            grant(1, "team", 5, Manage),
            grant(2, "team-a", 5, NoPermissions),
            grant(3, ".*", 6, Manage),
        ];
        assert_eq!(tier_match(&cache, &patterns, "team-a"), Some(NoPermissions));
        assert_eq!(tier_match(&cache, &patterns, "team-b"), Some(Manage));
        assert_eq!(tier_match(&cache, &patterns, "x"), Some(Manage), "tier 6");
    }
}
