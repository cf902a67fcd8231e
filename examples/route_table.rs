//! The route table on the command line: one `METHOD PATH` per line on stdin, one
//! JSON line per input on stdout, saying which route it is and what it needs in
//! general (`access`), and what `plan` says of the bare request (no body).
//! `tests/test_route_table.py` feeds it every route MLflow serves.
//!
//! ```sh
//! echo 'GET /api/2.0/mlflow/runs/get?run_id=abc' | cargo run -q --example route_table
//! ```

use std::io::{BufRead, Write};

use mlflow_edge_authz::mlflow::{self, Access, After, RouteClass};
use serde_json::{json, Value};

fn describe(method: &str, path: &str) -> Value {
    let routed = mlflow::route(method, path);
    let access = match routed.class() {
        RouteClass::Authenticated => "authenticated",
        RouteClass::AdminOnly | RouteClass::Unknown => "admin_only",
        RouteClass::Resources => "resources",
        RouteClass::Invalid => "error",
    };
    let mut out = json!({
        "method": method,
        "path": path,
        "route": routed.name,
        "access": access,
        "reads_body": routed.reads_body(),
    });
    match mlflow::plan(&routed, method, path, None) {
        Ok(plan) => {
            let (kind, detail) = match plan.access {
                Access::Authenticated => ("authenticated", Value::Null),
                Access::AdminOnly { why } => ("admin_only", Value::String(why)),
                Access::Resources(needs) => (
                    "resources",
                    serde_json::to_value(needs).unwrap_or(Value::Null),
                ),
            };
            let after = match plan.after {
                After::Nothing => Value::Null,
                After::ReportCreated { kind } => json!({ "report_created": kind }),
                After::Report(event) => json!({ "report": event }),
                After::Filter(listing) => json!({ "filter": listing }),
            };
            out["plan"] = json!({ "access": kind, "detail": detail, "after": after });
        }
        Err(e) => out["plan"] = json!({ "error": e.message }),
    }
    out
}

fn main() {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        let described = describe(method.trim(), path.trim());
        if writeln!(stdout, "{described}").is_err() {
            break;
        }
    }
}
