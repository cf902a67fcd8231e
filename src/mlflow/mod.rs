//! MLflow's HTTP surface as the filter sees it: which route a request is, what it
//! needs on which resources, and what must happen after MLflow answers.
//!
//! The route table lives here once; the policy service and the tests use it too.

use crate::permission::{Requirement, ResourceKind};
use crate::wire::{Listing, ResourceEvent};

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
    ReportCreated { kind: ResourceKind },
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
}

impl Routed {
    /// The route reads ids from a JSON body: the filter buffers a body that comes
    /// (up to its size limit) and passes it to [`plan`]. Never true for streamed
    /// artifact uploads.
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }
}

/// Matches a request line. `path_and_query` is the raw `:path` header.
pub fn route(_method: &str, _path_and_query: &str) -> Routed {
    Routed {
        name: "unknown",
        reads_body: false,
    }
}

/// What the request needs. `body` is the whole request body when the route reads
/// bodies and one came; `None` when there was none.
pub fn plan(
    routed: &Routed,
    _method: &str,
    _path_and_query: &str,
    _body: Option<&[u8]>,
) -> Result<Plan, RequestError> {
    Ok(Plan {
        route: routed.name,
        access: Access::AdminOnly {
            why: "this route is not in the filter's route table".into(),
        },
        after: After::Nothing,
    })
}

/// The creation event for MLflow's answer to a create call.
pub fn created_event(
    kind: ResourceKind,
    creator: &str,
    _response_body: &[u8],
) -> Result<ResourceEvent, String> {
    Err(format!(
        "cannot read the created {} of {creator} from MLflow's answer",
        kind.as_str()
    ))
}
