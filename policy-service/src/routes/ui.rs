//! The permission-management web UI at `/oidc/ui`: three static files compiled into
//! the binary (no build step, nothing fetched at run time) and the signed-in user's
//! `config.json`. The page calls the management API from the browser, same origin,
//! with the session cookie; every check is the API's, the UI only shows what it may.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::app::AppState;
use crate::routes::auth::{signed_in, LOGIN_PATH};
use crate::web::{page, redirect, ApiError};

const BASE: &str = "/oidc/ui/";

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// Scripts and styles from this origin only (no inline code, so an injected string
/// cannot run); no framing, so the grant and revoke buttons cannot be clickjacked.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oidc/ui", get(|| async { redirect(BASE, None) }))
        .route(BASE, get(index))
        .route(
            "/oidc/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/oidc/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/oidc/ui/config.json", get(config))
        // Without this the service's fallback would answer, in JSON; a browser gets a page.
        .route("/oidc/ui/{*rest}", get(not_found))
}

fn with_headers(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // Tiny files: always fresh, so a new binary's UI is what a browser runs.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (status, headers, body).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_headers(StatusCode::OK, content_type, body.to_string())
}

/// Envoy lets `/oidc/*` through unauthenticated, so the service itself sends a
/// browser without a session to sign in, and back here afterwards.
async fn index(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if signed_in(&state, &headers).await?.is_none() {
        return Ok(redirect(&format!("{LOGIN_PATH}?next={BASE}"), None));
    }
    Ok(with_headers(
        StatusCode::OK,
        "text/html; charset=utf-8",
        INDEX_HTML.to_string(),
    ))
}

#[derive(Debug, Serialize)]
struct Config {
    authenticated: bool,
    username: Option<String>,
    is_admin: bool,
    mlflow_url: &'static str,
}

async fn config(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let user = signed_in(&state, &headers).await?;
    let body = Config {
        authenticated: user.is_some(),
        is_admin: user.as_ref().is_some_and(|u| u.is_admin),
        username: user.map(|u| u.username),
        mlflow_url: "/",
    };
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response())
}

async fn not_found() -> Response {
    with_headers(
        StatusCode::NOT_FOUND,
        "text/html; charset=utf-8",
        page(
            "Not found",
            &format!("<p>No such page. <a href=\"{BASE}\">Permissions</a></p>"),
        ),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::{header, StatusCode};
    use serde_json::{json, Value};

    use crate::tests::{body_text, cookie_of, get, send, settings, sign_in};
    use crate::{app, AppState};

    #[tokio::test]
    async fn signed_out_browsers_are_sent_to_sign_in() {
        let router = app(AppState::new(settings(&[])).await.unwrap());
        let response = send(&router, get("/oidc/ui", None)).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers()[header::LOCATION], "/oidc/ui/");
        let response = send(&router, get("/oidc/ui/", None)).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            response.headers()[header::LOCATION],
            "/oidc/login?next=/oidc/ui/"
        );
        let response = send(&router, get("/oidc/ui/config.json", None)).await;
        let config: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            config,
            json!({"authenticated": false, "username": null, "is_admin": false, "mlflow_url": "/"})
        );
        let response = send(&router, get("/oidc/ui/nope.js", None)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn signed_in_users_get_the_page_and_their_config() {
        let state = AppState::new(settings(&[])).await.unwrap();
        let login = sign_in(
            &state,
            json!({"sub": "1", "email": "root@example.com", "groups": ["mlflow-admin"]}),
            "/",
        )
        .await;
        let cookie = cookie_of(&login);
        let router = app(state);

        let response = send(&router, get("/oidc/ui/", Some(&cookie))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let html = body_text(response).await;
        assert!(
            html.contains("app.js") && !html.contains("<script>"),
            "{html}"
        );

        let response = send(&router, get("/oidc/ui/app.js", None)).await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let response = send(&router, get("/oidc/ui/app.css", None)).await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );

        let response = send(&router, get("/oidc/ui/config.json", Some(&cookie))).await;
        let config: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            config,
            json!({"authenticated": true, "username": "root@example.com", "is_admin": true, "mlflow_url": "/"})
        );
    }
}
