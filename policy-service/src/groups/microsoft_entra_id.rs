//! Microsoft Entra ID: the groups are the `displayName`s of what Microsoft Graph
//! lists at `GET <OIDC_GRAPH_API_URL>/me/memberOf` for the user's access token,
//! every `@odata.nextLink` page followed. Any failure refuses the sign-in.

use openidconnect::reqwest;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use super::{DetectFuture, DetectorError, GroupDetector};
use crate::idp::error_chain;
use crate::settings::Settings;

/// More pages than this is refused rather than cut short (Graph pages hold 100
/// objects by default, so this is 10,000 memberships).
pub const MAX_PAGES: usize = 100;

pub struct MicrosoftEntraId {
    http: reqwest::Client,
    first_page: Url,
}

#[derive(Deserialize)]
struct Page {
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

impl MicrosoftEntraId {
    pub fn new(settings: &Settings) -> Result<Self, DetectorError> {
        let http = crate::idp::outbound_client(settings)
            .map_err(|e| DetectorError::Client(error_chain(&e)))?;
        Ok(MicrosoftEntraId {
            http,
            first_page: member_of_url(&settings.oidc_graph_api_url)?,
        })
    }

    async fn page(&self, url: &Url, access_token: &str) -> Result<Page, DetectorError> {
        let fail = |detail: String| DetectorError::Graph(format!("GET {url}: {detail}"));
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(error_chain(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| fail(error_chain(&e)))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP status {status}{}", graph_error(&body))));
        }
        serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the answer is not a Graph collection page: {e}")))
    }
}

/// `<base>/me/memberOf`, the base's path kept (`/v1.0`, `/beta`).
fn member_of_url(base: &Url) -> Result<Url, DetectorError> {
    let text = format!("{}/me/memberOf", base.as_str().trim_end_matches('/'));
    Url::parse(&text).map_err(|e| DetectorError::Graph(format!("bad URL {text}: {e}")))
}

/// Graph's own error text (`{"error": {"code", "message"}}`), when it sent one.
fn graph_error(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let error = &value["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!(" ({code}: {message})"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(message)) => format!(" ({message})"),
        (None, None) => String::new(),
    }
}

/// True when `next` is on the same scheme, host and port as `first` (the token is
/// only ever sent to the configured Graph).
fn same_origin(first: &Url, next: &Url) -> bool {
    first.scheme() == next.scheme()
        && first.host_str() == next.host_str()
        && first.port_or_known_default() == next.port_or_known_default()
}

impl GroupDetector for MicrosoftEntraId {
    fn name(&self) -> &'static str {
        "microsoft_entra_id"
    }

    fn groups<'a>(
        &'a self,
        access_token: &'a str,
        _id_claims: &'a Map<String, Value>,
    ) -> DetectFuture<'a> {
        Box::pin(async move {
            if access_token.is_empty() {
                return Err(DetectorError::Graph(
                    "the identity provider sent no access token".into(),
                ));
            }
            let mut groups: Vec<String> = Vec::new();
            let mut url = self.first_page.clone();
            for _ in 0..MAX_PAGES {
                let page = self.page(&url, access_token).await?;
                for object in &page.value {
                    if let Some(name) = object.get("displayName").and_then(Value::as_str) {
                        if !name.is_empty() && !groups.iter().any(|g| g == name) {
                            groups.push(name.to_string());
                        }
                    }
                }
                let Some(next) = page.next_link.filter(|n| !n.is_empty()) else {
                    return Ok(groups);
                };
                let next = Url::parse(&next).map_err(|e| {
                    DetectorError::Graph(format!("bad @odata.nextLink {next:?}: {e}"))
                })?;
                if !same_origin(&self.first_page, &next) {
                    return Err(DetectorError::Graph(format!(
                        "@odata.nextLink {next} is not on {} (OIDC_GRAPH_API_URL)",
                        self.first_page.origin().ascii_serialization()
                    )));
                }
                url = next;
            }
            Err(DetectorError::Graph(format!(
                "more than {MAX_PAGES} pages of memberships"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;
    use serde_json::json;

    use super::*;

    /// How the stand-in answers.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Three pages: 2 groups, then a duplicate and one without a name, then 2.
        ThreePages,
        /// 500 on the second page.
        FailOnPage2,
        BadJson,
        /// A nextLink to another host.
        ForeignNextLink,
        /// A nextLink to itself, forever.
        Endless,
    }

    /// The requests seen: ($skiptoken, Authorization).
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    #[derive(Clone)]
    struct Graph {
        base: String,
        mode: Mode,
        seen: Seen,
    }

    async fn member_of(
        State(g): State<Graph>,
        Query(q): Query<HashMap<String, String>>,
        headers: HeaderMap,
    ) -> Response {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let skip = q.get("$skiptoken").cloned();
        g.seen
            .lock()
            .unwrap()
            .push((skip.clone().unwrap_or_default(), auth.clone()));
        if auth.as_deref() != Some("Bearer user-at") {
            return (StatusCode::UNAUTHORIZED, "{}").into_response();
        }
        let next = |token: &str| format!("{}/me/memberOf?$skiptoken={token}", g.base);
        let group =
            |name: &str| json!({"@odata.type": "#microsoft.graph.group", "displayName": name});
        let body = match (g.mode, skip.as_deref()) {
            (Mode::BadJson, _) => return (StatusCode::OK, "{\"value\": [").into_response(),
            (Mode::FailOnPage2, Some("p2")) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"error": {"code": "generalException", "message": "boom"}}"#,
                )
                    .into_response()
            }
            (Mode::ForeignNextLink, None) => json!({
                "value": [group("a")],
                "@odata.nextLink": "http://203.0.113.9/v1.0/me/memberOf?$skiptoken=p2",
            }),
            (Mode::Endless, _) => json!({"value": [group("a")], "@odata.nextLink": next("again")}),
            (_, None) => json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
                "value": [group("mlflow-team-a"), group("ops")],
                "@odata.nextLink": next("p2"),
            }),
            (_, Some("p2")) => json!({
                "value": [
                    group("ops"),
                    {"@odata.type": "#microsoft.graph.directoryRole", "id": "no-name"},
                    {"@odata.type": "#microsoft.graph.group", "displayName": null},
                ],
                "@odata.nextLink": next("p3"),
            }),
            (_, _) => json!({"value": [group("mlflow"), group("z")]}),
        };
        axum::Json(body).into_response()
    }

    async fn start(mode: Mode) -> Graph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1.0", listener.local_addr().unwrap());
        let graph = Graph {
            base,
            mode,
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let router = Router::new()
            .route("/v1.0/me/memberOf", get(member_of))
            .with_state(graph.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        graph
    }

    fn detector(graph: &Graph) -> MicrosoftEntraId {
        let vars: HashMap<String, String> = [
            (
                "OIDC_DISCOVERY_URL",
                "http://127.0.0.1:1/.well-known/openid-configuration",
            ),
            ("OIDC_CLIENT_ID", "mlflow"),
            ("OIDC_CLIENT_SECRET", "secret"),
            ("OIDC_REDIRECT_URI", "http://localhost:8080/callback"),
            ("OIDC_HTTP_TIMEOUT_SECONDS", "3"),
            ("OIDC_GROUP_DETECTION_PLUGIN", "microsoft_entra_id"),
            // A trailing slash is fine.
            ("OIDC_GRAPH_API_URL", &format!("{}/", graph.base)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        MicrosoftEntraId::new(&Settings::from_vars(&vars).unwrap()).unwrap()
    }

    async fn run(mode: Mode) -> (Graph, Result<Vec<String>, DetectorError>) {
        let graph = start(mode).await;
        let result = detector(&graph).groups("user-at", &Map::new()).await;
        (graph, result)
    }

    #[tokio::test]
    async fn follows_every_page_dedupes_and_skips_nameless_objects() {
        let (graph, result) = run(Mode::ThreePages).await;
        assert_eq!(result.unwrap(), vec!["mlflow-team-a", "ops", "mlflow", "z"]);
        let seen = graph.seen.lock().unwrap().clone();
        let pages: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pages, vec!["", "p2", "p3"]);
        assert!(seen
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some("Bearer user-at")));
    }

    #[tokio::test]
    async fn a_500_refuses_with_graphs_message() {
        let (_, result) = run(Mode::FailOnPage2).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with("group detection through Microsoft Graph failed: GET http://"),
            "{err}"
        );
        assert!(err.contains("$skiptoken=p2"), "{err}");
        assert!(err.contains("500"), "{err}");
        assert!(err.contains("generalException: boom"), "{err}");
    }

    #[tokio::test]
    async fn bad_json_refuses() {
        let (_, result) = run(Mode::BadJson).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with("group detection through Microsoft Graph failed: "),
            "{err}"
        );
        assert!(err.contains("not a Graph collection page"), "{err}");
    }

    #[tokio::test]
    async fn a_wrong_token_and_an_unreachable_graph_refuse() {
        let graph = start(Mode::ThreePages).await;
        let err = detector(&graph)
            .groups("other-at", &Map::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("401"), "{err}");
        let err = detector(&graph)
            .groups("", &Map::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no access token"), "{err}");

        let closed = Graph {
            base: "http://127.0.0.1:1/v1.0".into(),
            mode: Mode::ThreePages,
            seen: graph.seen.clone(),
        };
        let err = detector(&closed)
            .groups("user-at", &Map::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("group detection through Microsoft Graph failed: GET http://127.0.0.1:1/v1.0/me/memberOf: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn next_links_stay_on_graph_and_are_bounded() {
        let (graph, result) = run(Mode::ForeignNextLink).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("is not on http://127.0.0.1:"), "{err}");
        assert_eq!(
            graph.seen.lock().unwrap().len(),
            1,
            "the token went elsewhere"
        );

        let (graph, result) = run(Mode::Endless).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("more than 100 pages"), "{err}");
        assert_eq!(graph.seen.lock().unwrap().len(), MAX_PAGES);
    }
}
