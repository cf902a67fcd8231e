//! The identity provider, seen through the `openidconnect` crate: discovery
//! (fetched lazily and cached, so the service starts while the IdP is down),
//! the authorization URL, and the code exchange with ID-token verification.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    reqwest, AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, Client,
    ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdTokenFields, JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;
use tokio::sync::Mutex;
use url::Url;

use mlflow_edge_authz::keys::KeySet;
use mlflow_edge_authz::settings::ASYMMETRIC_ALGORITHMS;
use mlflow_edge_authz::token::{JwtClaims, Policy, TokenError};

use crate::settings::Settings;

/// How long a fetched discovery document and JWKS are used before refetching.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A bearer token with an unknown key refetches the JWKS at most this often.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Clock skew allowed on a bearer token's `exp` and `nbf` (the filter's default).
const BEARER_SKEW_SECONDS: u64 = 30;

/// Why a bearer token was not accepted.
#[derive(Debug, Error)]
pub enum BearerError {
    #[error("the bearer token is not valid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Idp(IdpError),
}

/// Every claim of the ID token that is not a standard one (`groups`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdTokenFieldsX = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type IdpClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    StandardTokenResponse<IdTokenFieldsX, CoreTokenType>,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, Error)]
pub enum IdpError {
    #[error("the identity provider at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the identity provider at {url} sent an unusable discovery document: {detail}")]
    BadDiscovery { url: String, detail: String },
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the token request to the identity provider failed: {0}")]
    TokenRequest(String),
    #[error("the ID token from the identity provider is not valid: {0}")]
    InvalidIdToken(String),
    #[error("cannot start the HTTP client for the identity provider: {0}")]
    Client(String),
    #[error("the identity provider's UserInfo answer is not usable: {0}")]
    UserInfo(String),
}

/// A failed token request: the IdP's own refusal (e.g. `invalid_grant`), or a
/// request that did not get an answer.
fn token_error<E: StdError + 'static>(
    e: RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
) -> IdpError {
    match e {
        RequestTokenError::ServerResponse(resp) => {
            let mut text = resp.error().to_string();
            if let Some(desc) = resp.error_description() {
                text.push_str(": ");
                text.push_str(desc);
            }
            IdpError::Refused(text)
        }
        other => IdpError::TokenRequest(error_chain(&other)),
    }
}

/// Joins an error and its sources: "request failed: connection refused".
pub fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

struct Cached {
    metadata: CoreProviderMetadata,
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), if offered.
    end_session_endpoint: Option<Url>,
    fetched_at: Instant,
}

/// What the discovery document says beyond `CoreProviderMetadata`.
#[derive(Deserialize)]
struct LogoutMetadata {
    #[serde(default)]
    end_session_endpoint: Option<Url>,
}

/// A finished code exchange: the verified ID token's claims and the access token.
pub struct LoginTokens {
    pub claims: Map<String, Value>,
    pub access_token: String,
    /// Present when the IdP issued one (`OIDC_USE_REFRESH_TOKEN` asks for it).
    pub refresh_token: Option<String>,
}

/// A refresh at the token endpoint: a new access token (and maybe a rotated
/// refresh token, which then replaces the old one).
pub struct Refreshed {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// A started login: where to send the browser, and what to remember.
pub struct LoginStart {
    pub url: Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

pub struct Idp {
    http: reqwest::Client,
    discovery_url: Url,
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: Url,
    scopes: Vec<String>,
    cache: Mutex<Option<Arc<Cached>>>,
}

/// The HTTP client for calls to the IdP and Graph: `OIDC_HTTP_TIMEOUT_SECONDS`, and
/// no redirects (following them opens the client up to SSRF, and would carry a
/// user's bearer token elsewhere).
pub fn outbound_client(settings: &Settings) -> Result<reqwest::Client, reqwest::Error> {
    let timeout = Duration::from_secs(settings.oidc_http_timeout_seconds);
    reqwest::ClientBuilder::new()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
}

impl Idp {
    pub fn new(settings: &Settings) -> Result<Self, IdpError> {
        let http = outbound_client(settings).map_err(|e| IdpError::Client(error_chain(&e)))?;
        Ok(Idp {
            http,
            discovery_url: settings.oidc_discovery_url.clone(),
            client_id: settings.oidc_client_id.clone(),
            client_secret: settings.oidc_client_secret.clone(),
            redirect_uri: settings.oidc_redirect_uri.clone(),
            scopes: settings.oidc_scope.clone(),
            cache: Mutex::new(None),
        })
    }

    async fn fetch(&self) -> Result<(CoreProviderMetadata, Option<Url>), IdpError> {
        let url = self.discovery_url.to_string();
        let unreachable = |e: &dyn StdError| IdpError::Unreachable {
            url: url.clone(),
            detail: error_chain(e),
        };
        let bad = |detail: String| IdpError::BadDiscovery {
            url: url.clone(),
            detail,
        };
        let response = self
            .http
            .get(self.discovery_url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(bad(format!("HTTP status {status}")));
        }
        let body = response.bytes().await.map_err(|e| unreachable(&e))?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("not an OpenID Connect discovery document: {e}")))?;
        let end_session_endpoint = serde_json::from_slice::<LogoutMetadata>(&body)
            .map_err(|e| bad(format!("end_session_endpoint is not a URL: {e}")))?
            .end_session_endpoint;
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| IdpError::Unreachable {
                url: metadata.jwks_uri().to_string(),
                detail: error_chain(&e),
            })?;
        Ok((metadata.set_jwks(jwks), end_session_endpoint))
    }

    /// The provider metadata (with its JWKS), fetched when missing, stale or `force`d.
    /// A failed refresh keeps using what was cached.
    async fn metadata(&self, force: bool) -> Result<Arc<Cached>, IdpError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if !force && cached.fetched_at.elapsed() < DISCOVERY_TTL {
                return Ok(cached.clone());
            }
        }
        match self.fetch().await {
            Ok((metadata, end_session_endpoint)) => {
                let fresh = Arc::new(Cached {
                    metadata,
                    end_session_endpoint,
                    fetched_at: Instant::now(),
                });
                *cache = Some(fresh.clone());
                Ok(fresh)
            }
            Err(err) => match cache.as_ref() {
                Some(stale) if !force => {
                    tracing::warn!("keeping the cached discovery document: {err}");
                    Ok(stale.clone())
                }
                _ => Err(err),
            },
        }
    }

    fn client(&self, cached: &Cached) -> IdpClient {
        let metadata = &cached.metadata;
        let mut client = IdpClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::from_url(self.redirect_uri.clone()));
        if self.client_secret.is_some() {
            // client_secret_basic unless the IdP only takes client_secret_post.
            // Without a secret (public client) oauth2 sends client_id in the body.
            let methods = metadata.token_endpoint_auth_methods_supported();
            let basic = methods.is_none_or(|m| {
                m.is_empty() || m.contains(&CoreClientAuthMethod::ClientSecretBasic)
            });
            let post = methods.is_some_and(|m| m.contains(&CoreClientAuthMethod::ClientSecretPost));
            if !basic && post {
                client = client.set_auth_type(AuthType::RequestBody);
            }
        }
        client
    }

    /// Where to send a browser that signed out, so that it is signed out at the IdP
    /// too: the IdP's `end_session_endpoint` with `client_id` and
    /// `post_logout_redirect_uri`; `None` when the IdP offers none or cannot be
    /// reached (the local sign-out stands either way).
    pub async fn end_session_url(&self, post_logout_redirect_uri: &str) -> Option<Url> {
        let cached = match self.metadata(false).await {
            Ok(cached) => cached,
            Err(e) => {
                tracing::warn!("signing out locally only: {e}");
                return None;
            }
        };
        let mut url = cached.end_session_endpoint.clone()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Some(url)
    }

    /// Verifies a bearer token as the edge filter does (the same checks, from the
    /// root crate): the IdP's issuer, `OIDC_CLIENT_ID` as audience, an asymmetric
    /// algorithm, a key of the IdP's JWKS, `exp`/`nbf` with 30 s of skew. A token
    /// whose key is unknown makes one fresh fetch of the JWKS (keys rotate), at most
    /// once a minute. `Err` says what is wrong with the token, or that the IdP is down.
    pub async fn verify_bearer(&self, token: &str, now: u64) -> Result<JwtClaims, BearerError> {
        let mut cached = self.metadata(false).await.map_err(BearerError::Idp)?;
        loop {
            let jwks = serde_json::to_vec(cached.metadata.jwks())
                .map_err(|e| BearerError::Idp(IdpError::Client(e.to_string())))?;
            let algorithms: Vec<String> = ASYMMETRIC_ALGORITHMS
                .iter()
                .map(|a| a.to_string())
                .collect();
            let keys = KeySet::from_json(&jwks, &algorithms).map_err(BearerError::Invalid)?;
            let issuer = cached.metadata.issuer().to_string();
            let audiences = [self.client_id.clone()];
            let policy = Policy {
                issuer: &issuer,
                audiences: &audiences,
                algorithms: &algorithms,
                skew_seconds: BEARER_SKEW_SECONDS,
            };
            match policy.verify(token, &keys, now, 0) {
                Ok((_, claims)) => return Ok(claims),
                Err(TokenError::UnknownKey(_))
                    if cached.fetched_at.elapsed() > JWKS_REFETCH_INTERVAL =>
                {
                    cached = self.metadata(true).await.map_err(BearerError::Idp)?;
                }
                Err(e) => return Err(BearerError::Invalid(e.to_string())),
            }
        }
    }

    /// The issuer of the IdP, once discovery has been fetched.
    pub async fn issuer(&self) -> Result<String, IdpError> {
        Ok(self.metadata(false).await?.metadata.issuer().to_string())
    }

    /// Builds the authorization URL with state, nonce and a PKCE S256 challenge.
    pub async fn start_login(&self) -> Result<LoginStart, IdpError> {
        let cached = self.metadata(false).await?;
        let client = self.client(&cached);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            // openidconnect adds `openid` itself.
            .add_scopes(
                self.scopes
                    .iter()
                    .filter(|s| s.as_str() != "openid")
                    .map(|s| Scope::new(s.clone())),
            )
            .set_pkce_challenge(challenge)
            .url();
        Ok(LoginStart {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and verifies the ID token:
    /// signature against the IdP's JWKS (refetched once on a signature failure),
    /// `iss`, `aud`, `exp` and `nonce`. Returns every claim of the ID token, and the
    /// access token (for UserInfo and group detection).
    pub async fn finish_login(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<LoginTokens, IdpError> {
        let cached = self.metadata(false).await?;
        let client = self.client(&cached);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| IdpError::TokenRequest(error_chain(&e)))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()));
        let token = request
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = token
            .id_token()
            .ok_or_else(|| IdpError::InvalidIdToken("the token response has no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let verified = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => serde_json::to_value(claims),
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                // The IdP may have rotated its keys: refetch once, then retry.
                let fresh = self.metadata(true).await?;
                let client = self.client(&fresh);
                let claims = id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| IdpError::InvalidIdToken(error_chain(&e)))?;
                serde_json::to_value(claims)
            }
            Err(e) => return Err(IdpError::InvalidIdToken(error_chain(&e))),
        };
        let access_token = token.access_token().secret().clone();
        let refresh_token = token.refresh_token().map(|t| t.secret().clone());
        match verified {
            Ok(Value::Object(claims)) => Ok(LoginTokens {
                claims,
                access_token,
                refresh_token,
            }),
            Ok(_) => Err(IdpError::InvalidIdToken("claims are not an object".into())),
            Err(e) => Err(IdpError::InvalidIdToken(e.to_string())),
        }
    }

    /// Exchanges a refresh token for a fresh access token (no browser, no new login):
    /// how a session learns, at renewal, whether the user still may use MLflow.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Refreshed, IdpError> {
        let cached = self.metadata(false).await?;
        let client = self.client(&cached);
        let token = client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .map_err(|e| IdpError::TokenRequest(error_chain(&e)))?
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        Ok(Refreshed {
            access_token: token.access_token().secret().clone(),
            refresh_token: token.refresh_token().map(|t| t.secret().clone()),
        })
    }

    /// The UserInfo claims for `access_token` (a JSON answer; signed UserInfo is not
    /// supported). Its `sub` must be `expected_sub`, the ID token's (OpenID Connect
    /// Core 5.3.2), or the answer is refused.
    pub async fn userinfo(
        &self,
        access_token: &str,
        expected_sub: &str,
    ) -> Result<Map<String, Value>, IdpError> {
        let cached = self.metadata(false).await?;
        let Some(endpoint) = cached.metadata.userinfo_endpoint() else {
            return Err(IdpError::UserInfo(
                "the discovery document names no userinfo_endpoint".into(),
            ));
        };
        let url = endpoint.url().clone();
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| IdpError::Unreachable {
                url: url.to_string(),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        let signed = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/jwt"));
        let body = response.bytes().await.map_err(|e| IdpError::Unreachable {
            url: url.to_string(),
            detail: error_chain(&e),
        })?;
        if !status.is_success() {
            return Err(IdpError::UserInfo(format!(
                "GET {url}: HTTP status {status}"
            )));
        }
        if signed {
            return Err(IdpError::UserInfo(format!(
                "GET {url}: signed (application/jwt) answers are not supported"
            )));
        }
        let claims = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(claims)) => claims,
            _ => {
                return Err(IdpError::UserInfo(format!(
                    "GET {url}: the answer is not a JSON object"
                )))
            }
        };
        match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if sub == expected_sub => Ok(claims),
            Some(sub) => Err(IdpError::UserInfo(format!(
                "its sub {sub:?} is not the ID token's {expected_sub:?}"
            ))),
            None => Err(IdpError::UserInfo("it has no sub".into())),
        }
    }
}
