//! The permission model, defined once: levels, what each allows, how grants combine,
//! and what a request needs. The policy service resolves grants with it; the filter
//! compares a resolved permission with a route's need.

use serde::{Deserialize, Serialize};

/// A grant's level. `NoPermissions` is an explicit deny: it beats every other grant
/// where grants are folded (groups, a pattern tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Read,
    Use,
    Edit,
    Manage,
    NoPermissions,
}

/// What a request needs on a resource. `Manage` covers deleting and restoring as well
/// as managing grants: only MANAGE holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Capability {
    Read,
    Use,
    Edit,
    Manage,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Use,
        Permission::Edit,
        Permission::Manage,
        Permission::NoPermissions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Use => "USE",
            Permission::Edit => "EDIT",
            Permission::Manage => "MANAGE",
            Permission::NoPermissions => "NO_PERMISSIONS",
        }
    }

    /// Reads a level as written in settings and API bodies (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, String> {
        let wanted = text.trim();
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                format!(
                    "unknown permission {text:?}: expected one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS"
                )
            })
    }

    /// The system we replace orders levels by this number; higher is stronger, and
    /// `NoPermissions` (100) is the strongest of all.
    pub fn priority(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Use => 2,
            Permission::Edit => 3,
            Permission::Manage => 4,
            Permission::NoPermissions => 100,
        }
    }

    pub fn allows(self, need: Capability) -> bool {
        let held = match self {
            Permission::NoPermissions => return false,
            other => other.priority(),
        };
        let needed = match need {
            Capability::Read => 1,
            Capability::Use => 2,
            Capability::Edit => 3,
            Capability::Manage => 4,
        };
        held >= needed
    }

    /// Grants access of any kind (for listings: may the row be shown).
    pub fn grants_access(self) -> bool {
        self.allows(Capability::Read)
    }

    /// The stronger of two grants held through the same source (several groups, one
    /// pattern tier): an explicit deny wins, otherwise the more capable.
    pub fn strongest(self, other: Permission) -> Permission {
        if other.priority() > self.priority() {
            other
        } else {
            self
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Read => "READ",
            Capability::Use => "USE",
            Capability::Edit => "EDIT",
            Capability::Manage => "MANAGE",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of resource grants are kept for. Runs, metrics, artifacts, logged
/// models and traces inherit their experiment's; model versions and aliases their
/// registered model's. A prompt is a registered model tagged
/// `mlflow.prompt.is_prompt=true`: it shares direct grants with registered models,
/// but has pattern grants of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Experiment,
    RegisteredModel,
    Prompt,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Experiment => "experiment",
            ResourceKind::RegisteredModel => "registered model",
            ResourceKind::Prompt => "prompt",
        }
    }
}

/// Where a decision came from, in the words of the system we replace (its `kind`),
/// so a denial can be explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    User,
    Group,
    Regex,
    GroupRegex,
    /// Nothing matched: `DEFAULT_MLFLOW_PERMISSION`.
    Fallback,
    /// The resource (or the run, trace or logged model naming it) does not exist.
    Unresolved,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::User => "user",
            Source::Group => "group",
            Source::Regex => "regex",
            Source::GroupRegex => "group-regex",
            Source::Fallback => "fallback",
            Source::Unresolved => "unresolved",
        }
    }

    /// Reads one name of `PERMISSION_SOURCE_ORDER`.
    pub fn parse_grant_source(text: &str) -> Result<Self, String> {
        match text.trim() {
            "user" => Ok(Source::User),
            "group" => Ok(Source::Group),
            "regex" => Ok(Source::Regex),
            "group-regex" => Ok(Source::GroupRegex),
            other => Err(format!(
                "unknown permission source {other:?}: expected user, group, regex or group-regex"
            )),
        }
    }
}

/// A resource as a request names it; the policy service resolves it to the resource
/// that holds the grants (a run to its experiment, a model to a registered model or
/// a prompt).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    Experiment {
        id: String,
    },
    /// `experiment_name` where MLflow looks the experiment up by name.
    ExperimentName {
        name: String,
    },
    Run {
        id: String,
    },
    Trace {
        id: String,
    },
    LoggedModel {
        id: String,
    },
    /// A registered model or a prompt, by name.
    RegisteredModel {
        name: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Experiment { id } => write!(f, "experiment {id}"),
            Target::ExperimentName { name } => write!(f, "experiment named {name:?}"),
            Target::Run { id } => write!(f, "the experiment of run {id}"),
            Target::Trace { id } => write!(f, "the experiment of trace {id}"),
            Target::LoggedModel { id } => write!(f, "the experiment of logged model {id}"),
            Target::RegisteredModel { name } => write!(f, "registered model {name:?}"),
        }
    }
}

/// One thing a request needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub target: Target,
    pub need: Capability,
    /// A target that does not exist passes (MLflow answers 404 itself): only
    /// `GetExperimentByName`. Everywhere else an unresolvable target is a denial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing_ok: bool,
}

impl Requirement {
    pub fn new(target: Target, need: Capability) -> Self {
        Requirement {
            target,
            need,
            missing_ok: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn levels_allow_what_the_system_we_replace_allows() {
        use Capability::*;
        let table = [
            (Permission::Read, [true, false, false, false]),
            (Permission::Use, [true, true, false, false]),
            (Permission::Edit, [true, true, true, false]),
            (Permission::Manage, [true, true, true, true]),
            (Permission::NoPermissions, [false, false, false, false]),
        ];
        for (level, expected) in table {
            let got = [Read, Use, Edit, Manage].map(|c| level.allows(c));
            assert_eq!(got, expected, "{level}");
        }
    }

    #[test]
    fn an_explicit_deny_beats_every_grant_in_a_fold() {
        assert_eq!(
            Permission::Manage.strongest(Permission::NoPermissions),
            Permission::NoPermissions
        );
        assert_eq!(
            Permission::NoPermissions.strongest(Permission::Manage),
            Permission::NoPermissions
        );
        assert_eq!(
            Permission::Read.strongest(Permission::Edit),
            Permission::Edit
        );
    }

    #[test]
    fn levels_parse_as_written_and_refuse_others_by_name() {
        assert_eq!(Permission::parse("manage"), Ok(Permission::Manage));
        assert_eq!(
            Permission::parse("NO_PERMISSIONS"),
            Ok(Permission::NoPermissions)
        );
        let err = Permission::parse("OWNER").unwrap_err();
        assert!(err.contains("\"OWNER\"") && err.contains("READ"), "{err}");
    }

    #[test]
    fn wire_spelling_matches_the_system_we_replace() {
        assert_eq!(
            serde_json::to_string(&Permission::NoPermissions).unwrap(),
            r#""NO_PERMISSIONS""#
        );
        assert_eq!(
            serde_json::to_string(&Source::GroupRegex).unwrap(),
            r#""group-regex""#
        );
        let target = Target::Run { id: "abc".into() };
        assert_eq!(
            serde_json::to_string(&target).unwrap(),
            r#"{"type":"run","id":"abc"}"#
        );
    }
}
