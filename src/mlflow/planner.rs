//! Routes and plans of body-less requests, kept per VM: MLflow traffic repeats a small
//! set of request lines (the UI and clients poll the same searches and gets), and
//! matching one against the table costs microseconds in wasm, a lookup here a fraction.

use std::collections::HashMap;

use super::{plan, route, Plan, RequestError, Routed};

/// Request lines longer than this are not kept (they are rare, and would crowd out the rest).
const MAX_KEY_BYTES: usize = 1024;

struct Entry {
    routed: Routed,
    plan: Option<Result<Plan, RequestError>>,
}

pub struct Planner {
    entries: HashMap<String, Entry>,
    max_entries: usize,
}

impl Planner {
    pub fn new(max_entries: usize) -> Self {
        Planner {
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// [`route`], remembered per request line.
    pub fn route(&mut self, method: &str, path_and_query: &str) -> Routed {
        let key = format!("{method} {path_and_query}");
        if let Some(entry) = self.entries.get(&key) {
            return entry.routed.clone();
        }
        let routed = route(method, path_and_query);
        self.keep(
            key,
            Entry {
                routed: routed.clone(),
                plan: None,
            },
        );
        routed
    }

    /// [`plan`], remembered per request line when there is no body: a plan depends on
    /// nothing else.
    pub fn plan(
        &mut self,
        routed: &Routed,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Plan, RequestError> {
        if body.is_some() {
            return plan(routed, method, path_and_query, body);
        }
        let key = format!("{method} {path_and_query}");
        if let Some(Entry {
            routed: known,
            plan: Some(planned),
        }) = self.entries.get(&key)
        {
            if known == routed {
                return planned.clone();
            }
        }
        let planned = plan(routed, method, path_and_query, None);
        self.keep(
            key,
            Entry {
                routed: routed.clone(),
                plan: Some(planned.clone()),
            },
        );
        planned
    }

    fn keep(&mut self, key: String, entry: Entry) {
        if key.len() > MAX_KEY_BYTES {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            // A miss only costs a new match: start over rather than track recency.
            self.entries.clear();
        }
        self.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_remembered_plan_is_the_plan() {
        let mut planner = Planner::new(8);
        for path in [
            "/api/2.0/mlflow/experiments/get?experiment_id=1",
            "/api/2.0/mlflow/runs/get?run_id=abc",
            "/api/2.0/mlflow/webhooks",
            "/api/2.0/mlflow/experiments/get?experiment_id=1&experimentId=2",
            "/api/2.0/mlflow/experiments/get",
        ] {
            for _ in 0..2 {
                let routed = planner.route("GET", path);
                assert_eq!(routed, route("GET", path), "{path}");
                assert_eq!(
                    planner.plan(&routed, "GET", path, None),
                    plan(&route("GET", path), "GET", path, None),
                    "{path}"
                );
            }
        }
    }

    #[test]
    fn a_body_is_always_read_afresh_and_the_cache_stays_bounded() {
        let mut planner = Planner::new(2);
        let path = "/api/2.0/mlflow/runs/create";
        let routed = planner.route("POST", path);
        let one = planner.plan(&routed, "POST", path, Some(br#"{"experiment_id": "1"}"#));
        let two = planner.plan(&routed, "POST", path, Some(br#"{"experiment_id": "2"}"#));
        assert_ne!(one, two);
        for i in 0..10 {
            let p = format!("/api/2.0/mlflow/experiments/get?experiment_id={i}");
            let routed = planner.route("GET", &p);
            planner.plan(&routed, "GET", &p, None).unwrap();
            assert!(planner.entries.len() <= 2);
        }
    }
}
