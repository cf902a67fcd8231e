//! `app()` tests, without a socket: requests go through `tower::ServiceExt::oneshot`.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use jwt_simple::prelude::{Duration, Ed25519PublicKey, EdDSAPublicKeyLike, VerificationOptions};
use mlflow_edge_authz::wire::{self, ErrorBody, Jwks, RenewResponse, SessionClaims};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use crate::routes::auth::complete_login;
use crate::settings::Settings;
use crate::store::now;
use crate::store::testing::{fresh_database_uri, SharedDatabase};
use crate::{app, AppState};

pub(crate) fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = [
        // Nothing listens on port 1: discovery fails fast.
        (
            "OIDC_DISCOVERY_URL",
            "http://127.0.0.1:1/.well-known/openid-configuration",
        ),
        ("OIDC_CLIENT_ID", "mlflow"),
        ("OIDC_CLIENT_SECRET", "secret"),
        ("OIDC_REDIRECT_URI", "http://localhost:8080/callback"),
        ("OIDC_HTTP_TIMEOUT_SECONDS", "3"),
        ("OIDC_ADMIN_GROUP_NAME", "mlflow-admin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // A fresh database of its own (SQLite in memory, or PostgreSQL: see
    // `store::testing`), unless the test names one.
    if !extra.iter().any(|(k, _)| *k == "OIDC_USERS_DB_URI") {
        vars.insert("OIDC_USERS_DB_URI".into(), fresh_database_uri());
    }
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_vars(&vars).unwrap()
}

async fn state() -> AppState {
    AppState::new(settings(&[])).await.unwrap()
}

pub(crate) async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.unwrap()
}

pub(crate) fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(value) = cookie {
        builder = builder.header(header::COOKIE, format!("mlflow_session={value}"));
    }
    builder.body(Body::empty()).unwrap()
}

pub(crate) fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(crate) async fn body_text(response: Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub(crate) fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The cookie value from a login response's `Set-Cookie`.
pub(crate) fn cookie_of(response: &Response) -> String {
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .unwrap();
    let first = set_cookie.split(';').next().unwrap();
    first.strip_prefix("mlflow_session=").unwrap().to_string()
}

pub(crate) async fn sign_in(state: &AppState, claims_json: Value, next: &str) -> Response {
    complete_login(state, &claims(claims_json), "", None, next, now())
        .await
        .unwrap_or_else(axum::response::IntoResponse::into_response)
}

async fn renew(router: &Router, session: &str) -> Response {
    let body = json!({ "session": session }).to_string();
    send(router, post_json(wire::SESSION_RENEW_PATH, &body)).await
}

pub(crate) async fn error_body(response: Response) -> ErrorBody {
    serde_json::from_str(&body_text(response).await).unwrap()
}

#[tokio::test]
async fn health() {
    let router = app(state().await);
    let response = send(&router, get("/health", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "ok");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let router = app(state().await);
    let response = send(&router, get("/nope", None)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn login_with_unreachable_idp_is_503_with_message() {
    let router = app(state().await);
    let response = send(&router, get("/oidc/login?next=/x", None)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_text(response).await;
    assert!(
        body.contains(
            "the identity provider at http://127.0.0.1:1/.well-known/openid-configuration \
             cannot be reached: "
        ),
        "{body}"
    );
}

#[tokio::test]
async fn member_signs_in_and_the_cookie_verifies_with_the_published_keys() {
    let state = state().await;
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"sub": "1", "email": "Alice@Example.com", "groups": ["mlflow", "team-a"]}),
        "/ok?x=1",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[header::LOCATION], "/ok?x=1");
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    // SESSION_PERMANENT=false (the default): a browser-session cookie, no Max-Age.
    assert!(
        set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"));
    let cookie = cookie_of(&response);

    // Rebuild the public key from the JWKS, as the filter does.
    let response = send(&router, get(wire::SESSION_KEYS_PATH, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let jwks: Jwks = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let jwk = &jwks.keys[0];
    assert_eq!(jwk.kty, "OKP");
    assert_eq!(jwk.crv.as_deref(), Some("Ed25519"));
    assert_eq!(jwk.kid.as_deref(), Some(state.keys.kid()));
    let x = wire::base64url_decode(jwk.x.as_deref().unwrap()).unwrap();
    let public_key = Ed25519PublicKey::from_bytes(&x).unwrap();
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([wire::SESSION_ISSUER.to_string()])),
        allowed_audiences: Some(HashSet::from([wire::SESSION_AUDIENCE.to_string()])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let verified = public_key
        .verify_token::<SessionClaims>(&cookie, Some(options))
        .unwrap();
    assert_eq!(verified.subject.as_deref(), Some("alice@example.com"));
    assert!(!verified.custom.adm);
    let exp = verified.expires_at.unwrap().as_secs();
    let iat = verified.issued_at.unwrap().as_secs();
    assert_eq!(exp - iat, 300);
    let header = jwt_simple::token::Token::decode_metadata(&cookie).unwrap();
    assert_eq!(header.algorithm(), "EdDSA");
    assert_eq!(header.key_id(), Some(state.keys.kid()));

    // The user and their groups were recorded.
    let user = state
        .store
        .user_by_name("alice@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!user.is_admin);
    assert_eq!(
        state.store.user_groups(user.id).await.unwrap(),
        vec!["mlflow", "team-a"]
    );

    // Status sees the session.
    let response = send(&router, get("/oidc/auth/status", Some(&cookie))).await;
    let status: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(
        status,
        json!({"authenticated": true, "username": "alice@example.com", "is_admin": false})
    );
}

#[tokio::test]
async fn admin_is_flagged_and_demoted_at_next_login() {
    let state = state().await;
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"sub": "1", "preferred_username": "root", "groups": "mlflow-admin"}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let admin_cookie = cookie_of(&response);
    let verified = state
        .keys
        .verify(&state.store, &admin_cookie, now() as u64, 0)
        .await
        .unwrap();
    assert!(verified.adm);

    // Signs in again without the admin group: demoted, and renewal of the old
    // session re-reads the flag.
    let response = sign_in(
        &state,
        json!({"sub": "1", "preferred_username": "root", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let user = state.store.user_by_name("root").await.unwrap().unwrap();
    assert!(!user.is_admin);
    let response = renew(&router, &admin_cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: RenewResponse = serde_json::from_str(&body_text(response).await).unwrap();
    let verified = state
        .keys
        .verify(&state.store, &renewed.session, now() as u64, 0)
        .await
        .unwrap();
    assert!(!verified.adm);
}

#[tokio::test]
async fn outsider_is_refused_without_session() {
    let state = state().await;
    let response = sign_in(
        &state,
        json!({"sub": "1", "email": "eve@example.com", "groups": ["other", 5]}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let body = body_text(response).await;
    assert!(
        body.contains(
            "You are not allowed to sign in to MLflow: eve@example.com is not in an allowed group."
        ),
        "{body}"
    );
    assert!(state
        .store
        .user_by_name("eve@example.com")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn login_without_a_username_claim_names_the_fields() {
    let state = state().await;
    let response = sign_in(&state, json!({"sub": "1", "groups": ["mlflow"]}), "/").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = body_text(response).await;
    assert!(body.contains("email, preferred_username"), "{body}");
}

#[tokio::test]
async fn user_derived_text_is_escaped() {
    let state = state().await;
    let response = sign_in(
        &state,
        json!({"sub": "1", "email": "<script>x</script>", "groups": []}),
        "/",
    )
    .await;
    let body = body_text(response).await;
    assert!(!body.contains("<script>"), "{body}");
    assert!(body.contains("&lt;script&gt;"), "{body}");

    let router = app(state);
    let response = send(
        &router,
        get("/callback?error=%3Cb%3Eaccess_denied&state=zzz", None),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_text(response).await;
    assert!(body.contains("&lt;b&gt;access_denied"), "{body}");
    assert!(!body.contains("<b>"), "{body}");
}

#[tokio::test]
async fn callback_with_unknown_state_is_400_with_a_way_back() {
    let router = app(state().await);
    for uri in ["/callback?code=abc&state=nope", "/callback?code=abc"] {
        let response = send(&router, get(uri, None)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_text(response).await;
        assert!(body.contains("unknown or expired"), "{body}");
        assert!(body.contains("href=\"/oidc/login\""), "{body}");
    }
}

#[tokio::test]
async fn callback_state_is_single_use() {
    let state = state().await;
    state
        .store
        .insert_auth_state("st", "n", "v", "/", now())
        .await
        .unwrap();
    let router = app(state);
    // The first use consumes it (the code exchange then fails: the IdP is down).
    let response = send(&router, get("/callback?code=abc&state=st", None)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = send(&router, get("/callback?code=abc&state=st", None)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(response).await.contains("unknown or expired"));
}

#[tokio::test]
async fn renew_live_session_then_logout_ends_it() {
    let state = state().await;
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"email": "bob@example.com", "sub": "2", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    let cookie = cookie_of(&response);

    let response = renew(&router, &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: RenewResponse = serde_json::from_str(&body_text(response).await).unwrap();
    let verified = state
        .keys
        .verify(&state.store, &renewed.session, now() as u64, 0)
        .await
        .unwrap();
    assert_eq!(verified.username, "bob@example.com");
    assert_eq!(verified.expires_at, renewed.expires_at);
    assert!(renewed.set_cookie.starts_with(&format!(
        "mlflow_session={}; Path=/; HttpOnly",
        renewed.session
    )));

    let response = send(&router, get("/logout", Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[header::LOCATION], "/oidc/signed-out");
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(
        cleared,
        "mlflow_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
    );

    for session in [&cookie, &renewed.session] {
        let response = renew(&router, session).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let error = error_body(response).await;
        assert_eq!(error.error_code, "UNAUTHENTICATED");
        assert!(error.message.starts_with("session has ended"), "{error:?}");
    }
    let response = send(&router, get("/oidc/auth/status", Some(&cookie))).await;
    let status: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(status["authenticated"], false);
}

#[tokio::test]
async fn renew_refuses_tampered_and_malformed() {
    let state = state().await;
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"email": "bob@example.com", "sub": "2", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    let cookie = cookie_of(&response);

    // Swap the payload for one claiming admin; keep the signature.
    let parts: Vec<&str> = cookie.split('.').collect();
    let payload = wire::base64url_decode(parts[1]).unwrap();
    let mut payload: Value = serde_json::from_slice(&payload).unwrap();
    payload["adm"] = json!(true);
    let forged_payload = wire::base64url_encode(payload.to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let response = renew(&router, &tampered).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error = error_body(response).await;
    assert_eq!(error.error_code, "UNAUTHENTICATED");
    assert_eq!(error.message, "session cookie signature is invalid");

    let response = renew(&router, "not-a-jws").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    for body in ["", "{", "{\"cookie\": \"x\"}", "[1]", "{\"session\": 5}"] {
        let response = send(&router, post_json(wire::SESSION_RENEW_PATH, body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = error_body(response).await;
        assert_eq!(error.error_code, "INVALID_PARAMETER_VALUE");
        assert!(error.message.contains("session"), "{error:?}");
    }
}

#[tokio::test]
async fn renew_accepts_expired_cookie_within_session_lifetime_only() {
    let state = AppState::new(settings(&[("PERMANENT_SESSION_LIFETIME", "3600")]))
        .await
        .unwrap();
    let router = app(state.clone());
    let t = now();
    let user_id = state
        .store
        .record_login("carol", "Carol", false, &["mlflow".into()], t)
        .await
        .unwrap();
    // A session that started 50 minutes ago: its first cookie expired 45 minutes ago.
    let started = t - 3000;
    state
        .store
        .create_session("sid-c", user_id, started, started + 3600)
        .await
        .unwrap();
    let (old, _) = state
        .keys
        .sign(
            "carol",
            "sid-c",
            false,
            started as u64,
            300,
            (started + 3600) as u64,
        )
        .unwrap();
    let response = renew(&router, &old).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: RenewResponse = serde_json::from_str(&body_text(response).await).unwrap();
    // Capped by the server-side session's end.
    assert!(renewed.expires_at <= (started + 3600) as u64);

    // A cookie older than the session lifetime past its exp is refused.
    let ancient = t - 8000;
    let (too_old, _) = state
        .keys
        .sign(
            "carol",
            "sid-c",
            false,
            ancient as u64,
            300,
            (ancient + 300) as u64,
        )
        .unwrap();
    let response = renew(&router, &too_old).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(error_body(response)
        .await
        .message
        .starts_with("session has ended"));

    // An expired server-side session is refused even with a fresh cookie.
    state
        .store
        .create_session("sid-d", user_id, t - 4000, t - 400)
        .await
        .unwrap();
    let (cookie, _) = state
        .keys
        .sign(
            "carol",
            "sid-d",
            false,
            (t - 500) as u64,
            300,
            (t + 300) as u64,
        )
        .unwrap();
    let response = renew(&router, &cookie).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(error_body(response).await.message.contains("expired"));

    // A deleted user's session cannot be renewed.
    state.store.delete_user(user_id).await.unwrap();
    let response = renew(&router, &old).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn status_without_or_with_bad_cookie_is_anonymous() {
    let router = app(state().await);
    for cookie in [None, Some("garbage"), Some("a.b.c")] {
        let response = send(&router, get("/oidc/auth/status", cookie)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let status: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            status,
            json!({"authenticated": false, "username": null, "is_admin": false})
        );
    }
    // Logout without a cookie still clears it and redirects.
    let response = send(&router, get("/logout", None)).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The landing page's button carries OIDC_PROVIDER_DISPLAY_NAME, escaped.
    let response = send(&router, get("/oidc/signed-out", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = body_text(response).await;
    assert!(body.contains("Login with OIDC</a>"), "{body}");
    assert!(body.contains("href=\"/oidc/login?next=%2F\""), "{body}");
}

#[tokio::test]
async fn secure_and_samesite_reach_the_cookie() {
    let state = AppState::new(settings(&[
        ("SESSION_COOKIE_SECURE", "yes"),
        ("SESSION_COOKIE_SAMESITE", "strict"),
        ("SESSION_COOKIE_NAME", "sess"),
        ("SESSION_PERMANENT", "true"),
    ]))
    .await
    .unwrap();
    let response = sign_in(
        &state,
        json!({"email": "a@b.c", "sub": "2", "groups": ["mlflow"]}),
        "//evil.com",
    )
    .await;
    assert_eq!(response.headers()[header::LOCATION], "/");
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.starts_with("sess="), "{set_cookie}");
    assert!(
        set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400; Secure"),
        "{set_cookie}"
    );
}

#[tokio::test]
async fn signing_key_survives_a_restart_on_the_same_db_file() {
    // A SQLite file (or a PostgreSQL database) that outlives each AppState.
    let db = SharedDatabase::new();
    let uri = db.uri.clone();
    if db.file().is_some() {
        assert!(uri.starts_with("sqlite:////"));
    }
    let first = AppState::new(settings(&[("OIDC_USERS_DB_URI", &uri)]))
        .await
        .unwrap();
    if let Some(file) = db.file() {
        assert!(file.exists(), "the database file is created");
    }
    let kid = first.keys.kid().to_string();
    let response = sign_in(
        &first,
        json!({"email": "dan@example.com", "sub": "3", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    let cookie = cookie_of(&response);
    first.store.close().await;
    drop(first);

    let second = AppState::new(settings(&[("OIDC_USERS_DB_URI", &uri)]))
        .await
        .unwrap();
    assert_eq!(second.keys.kid(), kid);
    // A cookie signed before the restart renews after it.
    let response = renew(&app(second.clone()), &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Two replicas sharing the file publish the same single key.
    let third = AppState::new(settings(&[("OIDC_USERS_DB_URI", &uri)]))
        .await
        .unwrap();
    assert_eq!(third.keys.kid(), kid);
    let jwks = third.keys.jwks(&third.store).await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    second.store.close().await;
    third.store.close().await;
}

/// A minimal identity provider on the loopback interface: discovery, JWKS and
/// a token endpoint that checks the code, the PKCE verifier and the client
/// secret, and answers with an EdDSA-signed ID token.
mod fake_idp {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use axum::{Form, Json, Router};
    use jwt_simple::prelude::{Claims, Duration, Ed25519KeyPair, EdDSAKeyPairLike};
    use mlflow_edge_authz::wire::{Jwk, Jwks};
    use openidconnect::{PkceCodeChallenge, PkceCodeVerifier};
    use serde_json::{json, Map, Value};

    #[derive(Default)]
    pub struct Expect {
        pub nonce: String,
        pub challenge: String,
        pub claims: Map<String, Value>,
        pub basic_auth_seen: bool,
        /// What `/userinfo` answers to `Bearer at` (404 when None).
        pub userinfo: Option<Value>,
        pub userinfo_calls: usize,
    }

    #[derive(Clone)]
    pub struct Idp {
        pub base: String,
        pub key: Arc<Ed25519KeyPair>,
        pub expect: Arc<Mutex<Expect>>,
    }

    pub async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let idp = Idp {
            base,
            key: Arc::new(Ed25519KeyPair::generate().with_key_id("idp-key")),
            expect: Arc::new(Mutex::new(Expect::default())),
        };
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(idp.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        idp
    }

    async fn discovery(State(idp): State<Idp>) -> Json<Value> {
        let b = &idp.base;
        Json(json!({
            "issuer": b,
            "authorization_endpoint": format!("{b}/authorize"),
            "token_endpoint": format!("{b}/token"),
            "jwks_uri": format!("{b}/jwks"),
            "userinfo_endpoint": format!("{b}/userinfo"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }))
    }

    async fn jwks(State(idp): State<Idp>) -> Json<Jwks> {
        Json(Jwks {
            keys: vec![Jwk::ed25519("idp-key", &idp.key.public_key().to_bytes())],
        })
    }

    async fn userinfo(
        State(idp): State<Idp>,
        headers: HeaderMap,
    ) -> Result<Json<Value>, axum::http::StatusCode> {
        let mut expect = idp.expect.lock().unwrap();
        expect.userinfo_calls += 1;
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer at") {
            return Err(axum::http::StatusCode::UNAUTHORIZED);
        }
        expect
            .userinfo
            .clone()
            .map(Json)
            .ok_or(axum::http::StatusCode::NOT_FOUND)
    }

    async fn token(
        State(idp): State<Idp>,
        headers: HeaderMap,
        Form(form): Form<std::collections::HashMap<String, String>>,
    ) -> Result<Json<Value>, (axum::http::StatusCode, Json<Value>)> {
        let refuse = |why: &str| {
            (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant", "error_description": why})),
            )
        };
        let mut expect = idp.expect.lock().unwrap();
        if form.get("grant_type").map(String::as_str) != Some("authorization_code")
            || form.get("code").map(String::as_str) != Some("the-code")
        {
            return Err(refuse("bad code"));
        }
        let verifier = form
            .get("code_verifier")
            .ok_or_else(|| refuse("no verifier"))?;
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.clone()));
        if challenge.as_str() != expect.challenge {
            return Err(refuse("PKCE verifier does not match"));
        }
        // "mlflow:secret", base64.
        expect.basic_auth_seen = headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some("Basic bWxmbG93OnNlY3JldA==");
        let claims = Claims::with_custom_claims(expect.claims.clone(), Duration::from_secs(300))
            .with_issuer(&idp.base)
            .with_audience("mlflow")
            .with_subject("user-1")
            .with_nonce(&expect.nonce);
        let id_token = idp.key.sign(claims).unwrap();
        Ok(Json(json!({
            "access_token": "at",
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        })))
    }
}

async fn full_flow(groups: Value) -> (AppState, fake_idp::Idp, Response) {
    full_flow_with(
        &[],
        json!({"email": "Frank@Example.com", "groups": groups}),
        None,
    )
    .await
}

/// The whole sign-in against the local IdP, with extra settings, the ID token's
/// claims (`sub` is always `user-1`) and what its UserInfo endpoint answers.
async fn full_flow_with(
    extra: &[(&str, &str)],
    id_claims: Value,
    userinfo: Option<Value>,
) -> (AppState, fake_idp::Idp, Response) {
    let idp = fake_idp::start().await;
    let discovery = format!("{}/.well-known/openid-configuration", idp.base);
    let mut vars = vec![
        ("OIDC_DISCOVERY_URL", discovery.as_str()),
        ("OIDC_SCOPE", "openid email profile groups"),
    ];
    vars.extend_from_slice(extra);
    let state = AppState::new(settings(&vars)).await.unwrap();
    let router = app(state.clone());

    let response = send(&router, get("/oidc/login?next=/exp%3Fid%3D1", None)).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert_eq!(
        url.as_str().split('?').next(),
        Some(&*format!("{}/authorize", idp.base))
    );
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "mlflow");
    assert_eq!(q["redirect_uri"], "http://localhost:8080/callback");
    assert_eq!(q["scope"], "openid email profile groups");
    assert_eq!(q["code_challenge_method"], "S256");
    {
        let mut expect = idp.expect.lock().unwrap();
        expect.nonce = q["nonce"].clone();
        expect.challenge = q["code_challenge"].clone();
        expect.claims = claims(id_claims);
        expect.userinfo = userinfo;
    }
    let callback = format!("/callback?code=the-code&state={}", q["state"]);
    let response = send(&router, get(&callback, None)).await;
    (state, idp, response)
}

#[tokio::test]
async fn full_login_flow_against_a_local_idp() {
    let (state, idp, response) = full_flow(json!(["mlflow"])).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[header::LOCATION], "/exp?id=1");
    assert!(idp.expect.lock().unwrap().basic_auth_seen);
    let cookie = cookie_of(&response);
    let verified = state
        .keys
        .verify(&state.store, &cookie, now() as u64, 0)
        .await
        .unwrap();
    assert_eq!(verified.username, "frank@example.com");
    assert!(!verified.adm);
}

#[tokio::test]
async fn full_login_flow_refuses_an_outsider() {
    let (_state, _idp, response) = full_flow(json!("visitors")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    assert!(body_text(response)
        .await
        .contains("frank@example.com is not in an allowed group"));
}

#[tokio::test]
async fn userinfo_fills_in_a_missing_groups_claim_when_allowed() {
    let id_claims = json!({"email": "Frank@Example.com"});
    let info = json!({"sub": "user-1", "groups": ["mlflow"]});
    // Off (the default): UserInfo is not asked, so no groups, so refused.
    let (_, idp, response) = full_flow_with(&[], id_claims.clone(), Some(info.clone())).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(idp.expect.lock().unwrap().userinfo_calls, 0);

    let on = [("OIDC_USERINFO_GROUPS", "true")];
    let (state, idp, response) = full_flow_with(&on, id_claims.clone(), Some(info)).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(idp.expect.lock().unwrap().userinfo_calls, 1);
    let user = state
        .store
        .user_by_name("frank@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.store.user_groups(user.id).await.unwrap(),
        vec!["mlflow"]
    );

    // The ID token's claim, when present, wins: UserInfo is not asked.
    let (_, idp, response) = full_flow_with(
        &on,
        json!({"email": "f@x", "groups": ["mlflow"]}),
        Some(json!({"sub": "user-1", "groups": ["other"]})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(idp.expect.lock().unwrap().userinfo_calls, 0);

    // Nested claims work through UserInfo too.
    let (_, _, response) = full_flow_with(
        &[
            ("OIDC_USERINFO_GROUPS", "true"),
            ("OIDC_GROUPS_ATTRIBUTE", "realm_access.roles"),
        ],
        id_claims,
        Some(json!({"sub": "user-1", "realm_access": {"roles": ["mlflow-admin"]}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn userinfo_for_another_subject_or_failing_refuses() {
    let on = [("OIDC_USERINFO_GROUPS", "true")];
    let id_claims = json!({"email": "Frank@Example.com"});
    let (_, _, response) = full_flow_with(
        &on,
        id_claims.clone(),
        Some(json!({"sub": "user-2", "groups": ["mlflow"]})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let body = body_text(response).await;
    assert!(body.contains("UserInfo"), "{body}");
    assert!(body.contains("is not the ID token"), "{body}");

    let (_, _, response) = full_flow_with(&on, id_claims, None).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = body_text(response).await;
    assert!(body.contains("HTTP status 404"), "{body}");
}

#[tokio::test]
async fn group_name_patterns_admit_but_never_as_admin() {
    let state = AppState::new(settings(&[(
        "OIDC_GROUP_NAME_PATTERN",
        "mlflow-team-*,lab-[ab]",
    )]))
    .await
    .unwrap();
    let response = sign_in(
        &state,
        json!({"sub": "1", "email": "pat@example.com", "groups": ["x", "mlflow-team-a"]}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let verified = state
        .keys
        .verify(&state.store, &cookie_of(&response), now() as u64, 0)
        .await
        .unwrap();
    assert!(!verified.adm);
    let user = state
        .store
        .user_by_name("pat@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!user.is_admin);
    // Every group is recorded, not only the one that matched.
    assert_eq!(
        state.store.user_groups(user.id).await.unwrap(),
        vec!["mlflow-team-a", "x"]
    );

    let response = sign_in(
        &state,
        json!({"sub": "2", "email": "lab@example.com", "groups": "lab-b"}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    for refused in [
        json!(["lab-c"]),
        json!(["MLFLOW-TEAM-A"]),
        json!(["mlflow-team"]),
    ] {
        let response = sign_in(
            &state,
            json!({"sub": "3", "email": "out@example.com", "groups": refused}),
            "/",
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{refused}");
    }
}

#[tokio::test]
async fn nested_groups_claim_at_sign_in() {
    let state = AppState::new(settings(&[("OIDC_GROUPS_ATTRIBUTE", "realm_access.roles")]))
        .await
        .unwrap();
    let response = sign_in(
        &state,
        json!({"sub": "1", "email": "kc@example.com",
               "realm_access": {"roles": ["offline_access", "mlflow-admin"]}}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let user = state
        .store
        .user_by_name("kc@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(user.is_admin);
}

#[tokio::test]
async fn with_a_shared_key_the_internal_api_answers_only_the_filter() {
    let state = AppState::new(settings(&[("AUTHZ_SHARED_KEY", "s3cret")]))
        .await
        .unwrap();
    let router = crate::app(state);
    let check = |key: Option<&str>| {
        let mut r =
            Request::post(wire::BASIC_CHECK_PATH).header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            r = r.header(wire::SERVICE_KEY_HEADER, key);
        }
        r.body(Body::from(r#"{"username":"a","token":"mlf_00000000_x"}"#))
            .unwrap()
    };
    for key in [None, Some("wrong"), Some("s3cret ")] {
        let response = send(&router, check(key)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{key:?}");
    }
    // The right key reaches the handler (which refuses this unknown token: 401).
    let response = send(&router, check(Some("s3cret"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The public keys stay public.
    let response = send(&router, get(wire::SESSION_KEYS_PATH, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

// ---- SESSION_TYPE and SESSION_PERMANENT -------------------------------------------

/// Sign-in, status, renewal and logout through the app with these settings;
/// afterwards neither cookie is renewed nor signed in.
async fn session_round_trip(extra: &[(&str, &str)]) -> AppState {
    let state = AppState::new(settings(extra)).await.unwrap();
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"email": "bob@example.com", "sub": "2", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let cookie = cookie_of(&response);
    let response = send(&router, get("/oidc/auth/status", Some(&cookie))).await;
    let status: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(status["username"], "bob@example.com");

    let response = renew(&router, &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: RenewResponse = serde_json::from_str(&body_text(response).await).unwrap();

    // Logging out with the renewed cookie ends the session of the old one too.
    let response = send(&router, get("/logout", Some(&renewed.session))).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    for session in [&cookie, &renewed.session] {
        let response = renew(&router, session).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let error = error_body(response).await;
        assert_eq!(error.message, "session has ended: it was signed out");
        let response = send(&router, get("/oidc/auth/status", Some(session))).await;
        let status: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(status["authenticated"], false);
    }
    state
}

#[tokio::test]
async fn sessions_in_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flask_session");
    let dir_str = dir.to_str().unwrap();
    let state = session_round_trip(&[
        ("SESSION_TYPE", "filesystem"),
        ("SESSION_FILE_DIR", dir_str),
    ])
    .await;
    assert_eq!(state.sessions.name(), "filesystem");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[tokio::test]
async fn sessions_in_redis() {
    let Some((host, port)) = crate::sessions::redis::tests::test_redis() else {
        eprintln!("POLICY_SERVICE_TEST_REDIS is not set: Redis test not run");
        return;
    };
    let port = port.to_string();
    let prefix = format!("app-test-{:016x}:", rand::random::<u64>());
    let state = session_round_trip(&[
        ("SESSION_TYPE", "redis"),
        ("REDIS_HOST", &host),
        ("REDIS_PORT", &port),
        ("SESSION_KEY_PREFIX", &prefix),
    ])
    .await;
    assert_eq!(state.sessions.name(), "redis");
}

#[tokio::test]
async fn sessions_in_sql() {
    let state = session_round_trip(&[]).await;
    assert_eq!(state.sessions.name(), "sql");
}

#[tokio::test]
async fn session_permanent_gives_the_cookie_the_sessions_remaining_life() {
    let state = AppState::new(settings(&[
        ("SESSION_PERMANENT", "true"),
        ("PERMANENT_SESSION_LIFETIME", "3600"),
    ]))
    .await
    .unwrap();
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"email": "bob@example.com", "sub": "2", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.ends_with("; Max-Age=3600"), "{set_cookie}");
    let response = renew(&router, &cookie_of(&response)).await;
    let renewed: RenewResponse = serde_json::from_str(&body_text(response).await).unwrap();
    let max_age: u64 = renewed
        .set_cookie
        .rsplit_once("; Max-Age=")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&max_age), "{}", renewed.set_cookie);

    // Not permanent: renewal hands out a browser-session cookie too.
    let state = state_with(&[("PERMANENT_SESSION_LIFETIME", "3600")]).await;
    let router = app(state.clone());
    let response = sign_in(
        &state,
        json!({"email": "bob@example.com", "sub": "2", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    let response = renew(&router, &cookie_of(&response)).await;
    let renewed: RenewResponse = serde_json::from_str(&body_text(response).await).unwrap();
    assert!(
        !renewed.set_cookie.contains("Max-Age"),
        "{}",
        renewed.set_cookie
    );
}

async fn state_with(extra: &[(&str, &str)]) -> AppState {
    AppState::new(settings(extra)).await.unwrap()
}

#[tokio::test]
async fn unreachable_session_store_answers_503_never_a_session() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let state = state_with(&[
        ("SESSION_TYPE", "redis"),
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
    ])
    .await;
    let router = app(state.clone());

    // Sign-in: an error page, no cookie.
    let response = sign_in(
        &state,
        json!({"email": "bob@example.com", "sub": "2", "groups": ["mlflow"]}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let body = body_text(response).await;
    assert!(
        body.contains("The session store (SESSION_TYPE=redis) is unavailable"),
        "{body}"
    );

    // Renewal and status: 503 in MLflow's error shape.
    let t = now() as u64;
    let (cookie, _) = state
        .keys
        .sign("bob@example.com", "some-sid", false, t - 600, 300, t + 3600)
        .unwrap();
    for response in [
        renew(&router, &cookie).await,
        send(&router, get("/oidc/auth/status", Some(&cookie))).await,
    ] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let error = error_body(response).await;
        assert_eq!(error.error_code, "TEMPORARILY_UNAVAILABLE");
        assert!(error.message.contains("SESSION_TYPE=redis"), "{error:?}");
    }

    // Logout: an error page, and the cookie is kept so that it can be tried again.
    let response = send(&router, get("/logout", Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let body = body_text(response).await;
    assert!(body.contains("You are still signed in"), "{body}");
    assert!(body.contains("href=\"/logout\""), "{body}");
}

#[tokio::test]
async fn the_migration_history_lives_where_oidc_alembic_version_table_says() {
    use crate::store::{testing::SharedDatabase, Store};
    let db = SharedDatabase::new();
    // Migrated twice with the named history table: the second run finds it.
    for _ in 0..2 {
        Store::connect_with(&db.url(), Some("edge_schema_history"))
            .await
            .unwrap()
            .close()
            .await;
    }
    // Without it, sqlx's default history is empty, so the migrations run again and fail
    // on the tables they made: the setting decides which history counts.
    assert!(Store::connect_with(&db.url(), None).await.is_err());
    let bad = Settings::from_vars(
        &[
            ("OIDC_DISCOVERY_URL", "http://127.0.0.1:1/x"),
            ("OIDC_CLIENT_ID", "m"),
            ("OIDC_CLIENT_SECRET", "s"),
            ("OIDC_REDIRECT_URI", "http://localhost:8080/callback"),
            ("OIDC_ALEMBIC_VERSION_TABLE", "alembic; DROP TABLE users"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("OIDC_ALEMBIC_VERSION_TABLE"), "{bad}");
}

#[tokio::test]
async fn bearer_users_are_provisioned_through_the_gate_when_asked() {
    let call = |body: Value, key: Option<&str>| {
        let mut r =
            Request::post(wire::BEARER_CHECK_PATH).header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            r = r.header(wire::SERVICE_KEY_HEADER, key);
        }
        r.body(Body::from(body.to_string())).unwrap()
    };
    let ivan =
        json!({"username": "Ivan@Example.com", "token": "t", "claims": {"groups": ["mlflow"]}});
    let judy =
        json!({"username": "judy@example.com", "token": "t", "claims": {"groups": ["other"]}});

    // Without a shared key the service will not trust claims from anyone.
    let router = crate::app(state().await);
    assert_eq!(
        send(&router, call(ivan.clone(), None)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let state = AppState::new(settings(&[
        ("AUTHZ_SHARED_KEY", "k"),
        ("OIDC_PROVISION_ON_BEARER_AUTH", "true"),
    ]))
    .await
    .unwrap();
    let router = crate::app(state.clone());
    let response = send(&router, call(ivan.clone(), Some("k"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let user = state
        .store
        .user_by_name("ivan@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!user.is_admin);
    assert_eq!(
        state.store.user_groups(user.id).await.unwrap(),
        vec!["mlflow".to_string()]
    );

    let response = send(&router, call(judy, Some("k"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(error_body(response)
        .await
        .message
        .contains("not in a group"));
    assert!(state
        .store
        .user_by_name("judy@example.com")
        .await
        .unwrap()
        .is_none());

    // An admin group confers admin only with OIDC_TRUST_BEARER_GROUP_CLAIMS.
    let boss = json!({"username": "boss@example.com", "token": "t", "claims": {"groups": ["mlflow-admin"]}});
    let body = body_text(send(&router, call(boss, Some("k"))).await).await;
    assert!(body.contains(r#""admin":false"#), "{body}");

    // A grant to a user who never signed in makes a row, but not a way past the gate.
    state
        .store
        .resource_created(
            mlflow_edge_authz::permission::ResourceKind::Experiment,
            "7",
            "judy@example.com",
            None,
            crate::store::now(),
        )
        .await
        .unwrap();
    let judy =
        json!({"username": "judy@example.com", "token": "t", "claims": {"groups": ["other"]}});
    let response = send(&router, call(judy, Some("k"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
