//! MLflow's HTTP surface as the filter sees it: which route a request is, what it
//! needs on which resources, and what must happen after MLflow answers.
//!
//! The route table lives here once; the policy service and the tests use it too.
//!
//! How a request is read (§5.5 of the reference on the system we replace): HEAD is
//! GET; `/ajax-api/` is `/api/`; the path is percent-decoded once, as MLflow's router
//! sees it (`%2F` is a `/`), and a `..` segment, or a `.` segment outside an artifact
//! path, is refused rather than guessed at; ids are read where MLflow reads them (path
//! parameter, else a GET's non-empty query string, else the JSON body) and every other
//! value of the same field, in any source and either spelling, must pass too. See
//! `request` for the reading, `artifacts` for artifact paths, `table` for the routes,
//! `graphql` for what a `/graphql` request asks.

mod artifacts;
mod graphql;
mod planner;
mod request;
mod table;

use serde_json::Value;

use crate::permission::{Requirement, ResourceKind};
use crate::wire::{Listing, ResourceEvent};

pub use planner::Planner;
use request::{bad, parse_body, parse_query, split_request_line, Reads, Req};
use table::{FamilyAccess, Spec, FAMILIES, RULES};

/// What a request needs before it may reach MLflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any signed-in user: MLflow's UI shell, server info, and the policy service's
    /// own API (which checks its callers itself).
    Authenticated,
    /// Admins only: routes outside today's scope and routes the table does not know.
    AdminOnly { why: String },
    /// Every requirement must hold (an empty list passes).
    Resources(Vec<Requirement>),
}

/// What the filter does with MLflow's answer (only on a 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// Report the created resource, whose id MLflow's answer holds
    /// (see [`created_event`]), before releasing the answer.
    ReportCreated {
        kind: ResourceKind,
    },
    /// Report this rename or deletion (known from the request alone).
    Report(ResourceEvent),
    /// Have the policy service filter the answer to readable rows (admins skip it).
    Filter(Listing),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The route's name (MLflow's RPC name where it has one), for logs and messages.
    pub route: &'static str,
    pub access: Access,
    pub after: After,
}

/// A request MLflow would read differently from how the filter reads it, or cannot
/// read at all: answered 400 `INVALID_PARAMETER_VALUE` with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub message: String,
}

/// A request matched against the table, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub name: &'static str,
    reads_body: bool,
    found: Found,
}

/// What [`route`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Rule {
        index: usize,
        params: Vec<(&'static str, String)>,
    },
    Family(usize),
    /// OPTIONS on a known path: MLflow answers it without running a handler.
    Options,
    Unknown,
    /// A path the filter refuses to guess about (answered 400 by [`plan`]).
    Invalid(String),
}

/// What a route needs in general, before a request's ids are read: for listings of
/// the table (the route-coverage test). A request may still be refused (400) or, for
/// a few routes, turn admins-only by its content (a prompt-tag look-alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Authenticated,
    AdminOnly,
    Resources,
    /// Not an MLflow route the filter knows: admins only.
    Unknown,
    /// The request line is refused (400).
    Invalid,
}

impl Routed {
    /// The route reads ids from a JSON body: the filter buffers a body that comes
    /// (up to its size limit) and passes it to [`plan`]. Never true for streamed
    /// artifact uploads.
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }

    pub fn class(&self) -> RouteClass {
        match &self.found {
            Found::Rule { index, .. } => match RULES.get(*index).map(|r| &r.spec) {
                Some(Spec::Open | Spec::Create(_)) => RouteClass::Authenticated,
                Some(Spec::Admin(_)) | None => RouteClass::AdminOnly,
                Some(_) => RouteClass::Resources,
            },
            Found::Family(index) => match FAMILIES.get(*index).map(|f| &f.access) {
                Some(FamilyAccess::Open) => RouteClass::Authenticated,
                _ => RouteClass::AdminOnly,
            },
            Found::Options => RouteClass::Authenticated,
            Found::Unknown => RouteClass::Unknown,
            Found::Invalid(_) => RouteClass::Invalid,
        }
    }

    fn invalid(message: String) -> Self {
        Routed {
            name: "invalid",
            reads_body: false,
            found: Found::Invalid(message),
        }
    }
}

/// HEAD is authorized as GET; Werkzeug upper-cases the method.
fn canonical_method(method: &str) -> String {
    let upper = method.to_ascii_uppercase();
    if upper == "HEAD" {
        String::from("GET")
    } else {
        upper
    }
}

/// Matches a request line. `path_and_query` is the raw `:path` header.
pub fn route(method: &str, path_and_query: &str) -> Routed {
    let method = canonical_method(method);
    let line = match split_request_line(path_and_query) {
        Ok(line) => line,
        Err(e) => return Routed::invalid(e.message),
    };
    let mut segments: Vec<&str> = line.path.split('/').filter(|s| !s.is_empty()).collect();
    let trailing_slash = !segments.is_empty() && line.path.ends_with('/');
    if segments.contains(&"..") {
        return Routed::invalid(format!(
            "the request path {:?} has a '..' segment: mlflow would not resolve it, the filter does not guess",
            line.path
        ));
    }
    if let Some(first) = segments.first_mut().filter(|s| **s == "ajax-api") {
        *first = "api";
    }
    let dot_error = || {
        Routed::invalid(format!(
            "the request path {:?} has a '.' segment outside an artifact path: mlflow would not resolve it",
            line.path
        ))
    };
    for (index, rule) in RULES.iter().enumerate() {
        if rule.method != method {
            continue;
        }
        let Some((params, fixed)) = table::match_pattern(rule.pattern, &segments, trailing_slash)
        else {
            continue;
        };
        let dots_allowed = matches!(rule.spec, Spec::Artifact(_));
        if segments
            .iter()
            .enumerate()
            .any(|(i, s)| *s == "." && (i < fixed || !dots_allowed))
        {
            return dot_error();
        }
        return Routed {
            name: rule.name,
            reads_body: matches!(rule.reads, Reads::Proto | Reads::Json),
            found: Found::Rule { index, params },
        };
    }
    if segments.contains(&".") {
        return dot_error();
    }
    let family = FAMILIES
        .iter()
        .position(|f| table::family_matches(f.prefix, &segments));
    if method == "OPTIONS"
        && (family.is_some()
            || RULES
                .iter()
                .any(|r| table::match_pattern(r.pattern, &segments, trailing_slash).is_some()))
    {
        return Routed {
            name: "options",
            reads_body: false,
            found: Found::Options,
        };
    }
    if let Some(index) = family {
        return Routed {
            name: FAMILIES.get(index).map_or("unknown", |f| f.name),
            reads_body: false,
            found: Found::Family(index),
        };
    }
    Routed {
        name: "unknown",
        reads_body: false,
        found: Found::Unknown,
    }
}

/// What the request needs. `body` is the whole request body when the route reads
/// bodies and one came; `None` when there was none.
pub fn plan(
    routed: &Routed,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
) -> Result<Plan, RequestError> {
    let plan = |access: Access, after: After| {
        Ok(Plan {
            route: routed.name,
            access,
            after,
        })
    };
    let (index, params) = match &routed.found {
        Found::Invalid(message) => return Err(bad(message.clone())),
        Found::Unknown => {
            let path = path_and_query.split('?').next().unwrap_or(path_and_query);
            return plan(
                Access::AdminOnly {
                    why: format!("{method} {path} is not an MLflow route the filter knows"),
                },
                After::Nothing,
            );
        }
        Found::Options => return plan(Access::Authenticated, After::Nothing),
        Found::Family(index) => {
            let access = match FAMILIES.get(*index).map(|f| &f.access) {
                Some(FamilyAccess::Open) => Access::Authenticated,
                Some(FamilyAccess::Admin(why)) => Access::AdminOnly {
                    why: (*why).to_string(),
                },
                None => Access::AdminOnly {
                    why: String::from("this route is not in the filter's route table"),
                },
            };
            return plan(access, After::Nothing);
        }
        Found::Rule { index, params } => (*index, params),
    };
    let Some(rule) = RULES.get(index) else {
        return Err(bad("the route table changed under this request"));
    };
    let method = canonical_method(method);
    let query = match rule.reads {
        Reads::Path => Vec::new(),
        _ => parse_query(split_request_line(path_and_query)?.raw_query)?,
    };
    let body = match rule.reads {
        Reads::Proto if method == "GET" => {
            if body.is_some_and(|b| !b.iter().all(u8::is_ascii_whitespace)) {
                return Err(bad(format!(
                    "a GET request to {} must not have a body: mlflow could read ids from it \
                     that the filter did not check; send them in the query string",
                    rule.name
                )));
            }
            serde_json::Map::new()
        }
        Reads::Proto | Reads::Json => parse_body(body)?,
        Reads::Query | Reads::Path => serde_json::Map::new(),
    };
    let req = Req {
        method: &method,
        params,
        query,
        body,
        reads: rule.reads,
    };
    let decision = table::decide(rule, &req)?;
    plan(decision.access, decision.after)
}

/// The creation event for MLflow's answer to a create call: `{"experiment_id": "..."}`
/// for CreateExperiment, `{"registered_model": {"name": "..."}}` for
/// CreateRegisteredModel (a registered model or a prompt).
pub fn created_event(
    kind: ResourceKind,
    creator: &str,
    response_body: &[u8],
) -> Result<ResourceEvent, String> {
    let what = kind.as_str();
    let answer: Value = serde_json::from_slice(response_body)
        .map_err(|e| format!("mlflow's answer to the creation of a {what} is not JSON: {e}"))?;
    let (id, field) = match kind {
        ResourceKind::Experiment => (answer.get("experiment_id"), "experiment_id"),
        ResourceKind::RegisteredModel | ResourceKind::Prompt => (
            answer.get("registered_model").and_then(|m| m.get("name")),
            "registered_model.name",
        ),
    };
    let id = match id {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => {
            return Err(format!(
                "mlflow's answer to the creation of a {what} by {creator} has no {field}"
            ))
        }
    };
    Ok(ResourceEvent::Created {
        kind,
        id,
        creator: creator.to_string(),
    })
}

#[cfg(test)]
mod tests;
