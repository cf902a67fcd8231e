//! Authentication of one request: which credential, is it valid, and what to answer.
//! Pure logic: the glue reads headers through [`Headers`], performs the callouts an
//! [`Outcome`] asks for, and feeds their answers back.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::cache::{CredentialCache, Identity, RefusedCache, VerifiedCache};
use crate::keys::KeySet;
use crate::reply::Reply;
use crate::settings::Settings;
use crate::token::{peek, Policy, TokenError};
use crate::wire::{
    self, BasicCredential, BearerCredential, CredentialIdentity, Discovery, RenewResponse,
    SessionClaims,
};

/// Read access to the request's headers (`:path`, `:method` included).
pub trait Headers {
    fn get(&self, name: &str) -> Option<String>;
}

/// How long a refused token is remembered.
const REFUSED_TTL_SECONDS: u64 = 60;
/// After a failed key fetch, requests that need the keys get 503 for this long
/// instead of each starting another fetch.
const FETCH_RETRY_MS: u64 = 1_000;
/// After a renewal, the old cookie still passes this long, for requests that were
/// already in flight with it; short, since a copy of it then outlives a logout by this much.
const RENEWED_GRACE_SECONDS: u64 = 5;
/// An expired session cookie is sent to the service for renewal within this window;
/// the service alone decides whether the session still lives.
const RENEWAL_GRACE_SECONDS: u64 = 400 * 24 * 3600;

/// The policy service's answer when the filter's key does not match its own.
const KEY_REFUSED: &str =
    "the policy service refused this filter: AUTHZ_SHARED_KEY differs between Envoy and the service";

/// Why the policy service's answer about a credential is not an identity.
enum Refusal {
    /// The service says no (401), and why: a verdict on the credential.
    Refused(String),
    /// No usable answer (down, timed out, the filter's key refused): never a pass.
    Unavailable(Reply),
}

/// Reads the service's answer about `what` (a credential check).
fn credential_answer(what: &str, status: u32, body: &[u8]) -> Result<CredentialIdentity, Refusal> {
    let unavailable = |why: String| Refusal::Unavailable(Reply::unavailable(&why));
    match status {
        200 => serde_json::from_slice::<CredentialIdentity>(body).map_err(|e| {
            unavailable(format!(
                "{what} check: the policy service's answer is invalid: {e}"
            ))
        }),
        401 => Err(Refusal::Refused(
            serde_json::from_slice::<wire::ErrorBody>(body)
                .map(|b| b.message)
                .unwrap_or_else(|_| format!("{what} is not accepted")),
        )),
        403 => Err(Refusal::Unavailable(Reply::unavailable(KEY_REFUSED))),
        0 => Err(unavailable(format!(
            "{what} cannot be checked: the policy service did not answer"
        ))),
        s => Err(unavailable(format!(
            "{what} cannot be checked: the policy service answered {s}"
        ))),
    }
}

/// What the glue does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward with this identity.
    Allow(Rc<Identity>),
    /// A sign-in route: forward without an identity.
    Public,
    /// Answer the client directly.
    Deny(Reply),
    /// Fetch keys, then run again.
    Fetch(KeyFetch),
    /// Ask the policy service to renew this expired session cookie.
    Renew(String),
    /// Ask the policy service about this access token; `key` is what the answer
    /// is cached under (see [`Authenticator::basic_checked`]).
    CheckBasic {
        key: [u8; 32],
        credential: BasicCredential,
    },
    /// Show this verified bearer token to the policy service (provisioning), then
    /// [`Authenticator::bearer_checked`]; `until` is how long its answer may be cached.
    CheckBearer {
        until: u64,
        credential: BearerCredential,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFetch {
    /// The IdP's discovery document, then its JWKS.
    Idp,
    /// The policy service's session keys.
    Session,
}

/// Keys from one source, as held by this VM and shared between VMs.
#[derive(Debug, Default)]
struct KeySource {
    keys: Option<KeySet>,
    /// When the keys were fetched (by any VM), ms since the epoch.
    fetched_at_ms: u64,
    last_failure_ms: Option<u64>,
    last_error: String,
}

impl KeySource {
    /// `Some(outcome)` when the keys cannot be used right now.
    fn need(&self, fetch: KeyFetch, now_ms: u64, what: &str) -> Option<Outcome> {
        if self.keys.is_some() {
            return None;
        }
        Some(match self.last_failure_ms {
            Some(t) if now_ms.saturating_sub(t) < FETCH_RETRY_MS => {
                Outcome::Deny(Reply::unavailable(&format!(
                    "{what} cannot be verified right now: {}",
                    self.last_error
                )))
            }
            _ => Outcome::Fetch(fetch),
        })
    }

    fn may_refetch(&self, now_ms: u64, interval_ms: u64) -> bool {
        now_ms.saturating_sub(self.fetched_at_ms) >= interval_ms
            && self
                .last_failure_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= FETCH_RETRY_MS)
    }
}

/// What VMs share about a key source (Envoy shared data), so that one fetch serves all.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub fetched_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub jwks: wire::Jwks,
}

/// Counters, flushed to Envoy metrics by the root context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub allowed: u64,
    pub denied: u64,
    pub unavailable: u64,
    pub verified: u64,
    pub cache_hits: u64,
    pub jwks_fetches: u64,
    pub session_key_fetches: u64,
    pub renewals: u64,
}

impl Stats {
    pub fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("allowed", self.allowed),
            ("denied", self.denied),
            ("unavailable", self.unavailable),
            ("verified", self.verified),
            ("cache_hits", self.cache_hits),
            ("jwks_fetches", self.jwks_fetches),
            ("session_key_fetches", self.session_key_fetches),
            ("renewals", self.renewals),
        ]
    }
}

/// One per VM (per Envoy worker): settings, keys, caches.
pub struct Authenticator {
    pub settings: Rc<Settings>,
    /// The secret for the policy service's internal API ([`wire::SERVICE_KEY_ENV`]).
    pub service_key: Option<String>,
    /// Issuer and JWKS location, from the discovery document.
    discovery: Option<Discovery>,
    idp: KeySource,
    session: KeySource,
    bearer_cache: VerifiedCache,
    session_cache: VerifiedCache,
    refused: RefusedCache,
    credentials: CredentialCache,
    /// Signature checks that failed in the current second: (second, count).
    invalid_signatures: (u64, u32),
    pub stats: Stats,
}

/// A request's credential, by the filter's reading (the policy service reads the
/// `Authorization` header the same way).
pub enum Credential<'a> {
    Bearer(&'a str),
    /// `Authorization: Basic ...`, whole header value.
    Basic(&'a str),
    Session(&'a str),
    Unsupported(&'static str),
    None,
}

impl Authenticator {
    pub fn new(settings: Rc<Settings>) -> Self {
        let n = settings.token_cache_max_entries;
        Authenticator {
            settings,
            service_key: None,
            discovery: None,
            idp: KeySource::default(),
            session: KeySource::default(),
            bearer_cache: VerifiedCache::new(n),
            session_cache: VerifiedCache::new(n),
            refused: RefusedCache::new(n.min(4096)),
            credentials: CredentialCache::new(n),
            invalid_signatures: (0, 0),
            stats: Stats::default(),
        }
    }

    /// Decides one request. Reads `authorization`, then `cookie`; the rest only
    /// when the answer is not an allow.
    pub fn authenticate(&mut self, req: &impl Headers, now_ms: u64) -> Outcome {
        let authorization = req.get("authorization");
        let cookie;
        let credential = match authorization.as_deref() {
            Some(value) => parse_authorization(value),
            None => {
                cookie = req.get("cookie");
                match cookie
                    .as_deref()
                    .and_then(|c| find_cookie(c, &self.settings.session_cookie_name))
                {
                    Some(v) => Credential::Session(v),
                    None => Credential::None,
                }
            }
        };
        let outcome = match credential {
            Credential::Bearer(token) => self.bearer(token, now_ms),
            Credential::Session(token) => self.session(token, now_ms, req),
            Credential::Basic(value) => self.basic(value, now_ms),
            Credential::Unsupported(why) => Outcome::Deny(Reply::unauthenticated(why, true)),
            Credential::None => Outcome::Deny(self.no_credentials(req)),
        };
        let outcome = match outcome {
            Outcome::Allow(_) => outcome,
            // The sign-in routes work whatever state the credentials are in.
            _ if req
                .get(":path")
                .is_some_and(|p| self.settings.is_public(&p)) =>
            {
                Outcome::Public
            }
            _ => outcome,
        };
        self.count(&outcome);
        outcome
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Allow(_) => self.stats.allowed += 1,
            Outcome::Deny(r) if r.status == 503 => self.stats.unavailable += 1,
            Outcome::Deny(_) => self.stats.denied += 1,
            _ => {}
        }
    }

    fn bearer(&mut self, token: &str, now_ms: u64) -> Outcome {
        let now = now_ms / 1000;
        if let Some(id) = self.bearer_cache.get(token, now) {
            self.stats.cache_hits += 1;
            return Outcome::Allow(id);
        }
        if let Some(why) = self.refused.get(token, now) {
            return Outcome::Deny(Reply::unauthenticated(&why, true));
        }
        if let Some(o) = self.idp.need(KeyFetch::Idp, now_ms, "bearer tokens") {
            return o;
        }
        if let Some(o) = self.over_budget(now) {
            return o;
        }
        let s = &self.settings;
        let issuer = match (&s.oidc_issuer, &self.discovery) {
            (Some(iss), _) => iss.as_str(),
            (None, Some(d)) => d.issuer.as_str(),
            (None, None) => "",
        };
        let policy = Policy {
            issuer,
            audiences: &s.oidc_audience,
            algorithms: &s.allowed_algorithms,
            skew_seconds: s.clock_skew_seconds,
        };
        let keys = match &self.idp.keys {
            Some(k) => k,
            None => return Outcome::Fetch(KeyFetch::Idp),
        };
        let result = policy.verify(token, keys, now, 0).and_then(|(t, claims)| {
            let username = claims.username(&s.oidc_username_field)?;
            Ok((t, claims, username))
        });
        match result {
            Ok((t, claims, username)) => {
                self.stats.verified += 1;
                let until = t.exp.unwrap_or(now).saturating_add(s.clock_skew_seconds);
                if s.oidc_provision_on_bearer_auth {
                    let credential = BearerCredential {
                        username,
                        token: token.to_string(),
                        claims: claims.custom,
                    };
                    return Outcome::CheckBearer { until, credential };
                }
                let id = Rc::new(Identity {
                    username,
                    admin: false,
                });
                self.bearer_cache
                    .insert(token.to_string(), id.clone(), until, now);
                Outcome::Allow(id)
            }
            Err(e) if self.keys_may_be_stale(KeyFetch::Idp, token, &e, now_ms) => {
                Outcome::Fetch(KeyFetch::Idp)
            }
            Err(e) => self.refuse(token, e, now),
        }
    }

    /// A personal access token: the policy service's answer, cached by digest for
    /// `access_token_cache_seconds` (the bound on how long a revoked token still works).
    fn basic(&mut self, value: &str, now_ms: u64) -> Outcome {
        let now = now_ms / 1000;
        let key = hmac_sha256::Hash::hash(value.as_bytes());
        match self.credentials.get(&key, now) {
            Some(Ok(id)) => {
                self.stats.cache_hits += 1;
                return Outcome::Allow(id);
            }
            Some(Err(why)) => return Outcome::Deny(Reply::unauthenticated(&why, true)),
            None => {}
        }
        match parse_basic(value) {
            Ok(credential) => Outcome::CheckBasic { key, credential },
            Err(why) => Outcome::Deny(Reply::unauthenticated(why, true)),
        }
    }

    /// The policy service answered about a verified bearer token (status 0: no answer).
    pub fn bearer_checked(
        &mut self,
        token: &str,
        until: u64,
        status: u32,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let now = now_ms / 1000;
        let outcome = match credential_answer("bearer token's user", status, body) {
            Ok(c) => {
                let id = Rc::new(Identity {
                    username: c.username,
                    admin: c.admin,
                });
                self.bearer_cache
                    .insert(token.to_string(), id.clone(), until, now);
                Outcome::Allow(id)
            }
            Err(Refusal::Refused(why)) => {
                let refused_until = until.min(now + REFUSED_TTL_SECONDS);
                self.refused.insert(
                    token.to_string(),
                    Rc::from(why.as_str()),
                    refused_until,
                    now,
                );
                Outcome::Deny(Reply::unauthenticated(&why, true))
            }
            Err(Refusal::Unavailable(reply)) => Outcome::Deny(reply),
        };
        self.count(&outcome);
        outcome
    }

    /// The policy service answered about an access token (status 0: no answer).
    pub fn basic_checked(
        &mut self,
        key: [u8; 32],
        status: u32,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let now = now_ms / 1000;
        let ttl = self.settings.access_token_cache_seconds;
        let outcome = match credential_answer("access token", status, body) {
            Ok(c) => {
                let id = Rc::new(Identity {
                    username: c.username,
                    admin: c.admin,
                });
                let until = (now + ttl).min(c.expires_at);
                self.credentials.insert(key, Ok(id.clone()), until, now);
                Outcome::Allow(id)
            }
            Err(Refusal::Refused(why)) => {
                self.credentials
                    .insert(key, Err(Rc::from(why.as_str())), now + ttl, now);
                Outcome::Deny(Reply::unauthenticated(&why, true))
            }
            Err(Refusal::Unavailable(reply)) => Outcome::Deny(reply),
        };
        self.count(&outcome);
        outcome
    }

    fn refuse(&mut self, token: &str, e: TokenError, now: u64) -> Outcome {
        let message = e.to_string();
        self.remember_refusal(token, &e, &message, now);
        Outcome::Deny(Reply::unauthenticated(&message, true))
    }

    /// The token may be signed with a key we have not fetched yet: it names an unknown
    /// `kid`, or it names none and the key we hold does not verify it (rotation at an
    /// IdP that omits `kid`). True when a refetch is due; the caller then retries.
    fn keys_may_be_stale(
        &mut self,
        which: KeyFetch,
        token: &str,
        e: &TokenError,
        now_ms: u64,
    ) -> bool {
        let suspect = match e {
            TokenError::UnknownKey(_) => true,
            TokenError::BadSignature(_) => peek(token).is_ok_and(|t| t.kid.is_none()),
            _ => false,
        };
        let interval = self.settings.jwks_refetch_interval_ms;
        if !suspect || !self.source(which).may_refetch(now_ms, interval) {
            return false;
        }
        if let TokenError::BadSignature(_) = e {
            self.count_invalid_signature(now_ms / 1000);
        }
        true
    }

    fn count_invalid_signature(&mut self, now: u64) {
        if self.invalid_signatures.0 == now {
            self.invalid_signatures.1 += 1;
        } else {
            self.invalid_signatures = (now, 1);
        }
    }

    /// Remembers refusals that cost a signature check; the cheap ones are cheap again.
    fn remember_refusal(&mut self, token: &str, e: &TokenError, message: &str, now: u64) {
        if let TokenError::BadSignature(_) = e {
            self.count_invalid_signature(now);
        }
        if matches!(e, TokenError::BadSignature(_) | TokenError::NoUsername(_)) {
            self.refused.insert(
                token.to_string(),
                Rc::from(message),
                now + REFUSED_TTL_SECONDS,
                now,
            );
        }
    }

    /// Too many forgeries this second: no more signature checks until the next one.
    fn over_budget(&self, now: u64) -> Option<Outcome> {
        let (second, count) = self.invalid_signatures;
        (second == now && count >= self.settings.max_invalid_signatures_per_second).then(|| {
            Outcome::Deny(Reply::unavailable(
                "too many tokens with invalid signatures in the last second; try again shortly",
            ))
        })
    }

    fn session_policy(&self) -> (Vec<String>, Vec<String>) {
        (
            vec![wire::SESSION_AUDIENCE.to_string()],
            vec!["EdDSA".to_string()],
        )
    }

    fn session(&mut self, token: &str, now_ms: u64, req: &impl Headers) -> Outcome {
        let now = now_ms / 1000;
        if let Some(id) = self.session_cache.get(token, now) {
            self.stats.cache_hits += 1;
            return Outcome::Allow(id);
        }
        if let Some(why) = self.refused.get(token, now) {
            return Outcome::Deny(self.session_refused(req, &why));
        }
        if let Some(o) = self
            .session
            .need(KeyFetch::Session, now_ms, "session cookies")
        {
            return o;
        }
        let (aud, algs) = self.session_policy();
        let policy = Policy {
            issuer: wire::SESSION_ISSUER,
            audiences: &aud,
            algorithms: &algs,
            skew_seconds: self.settings.clock_skew_seconds,
        };
        let Some(keys) = &self.session.keys else {
            return Outcome::Fetch(KeyFetch::Session);
        };
        match policy
            .verify(token, keys, now, 0)
            .and_then(session_identity)
        {
            Ok((exp, id)) => {
                self.stats.verified += 1;
                let until = exp.saturating_add(self.settings.clock_skew_seconds);
                self.session_cache
                    .insert(token.to_string(), id.clone(), until, now);
                Outcome::Allow(id)
            }
            Err(TokenError::Expired) => {
                match policy.verify(token, keys, now, RENEWAL_GRACE_SECONDS) {
                    Ok(_) => Outcome::Renew(token.to_string()),
                    Err(e) => Outcome::Deny(self.session_refused(req, &e.to_string())),
                }
            }
            Err(e) if self.keys_may_be_stale(KeyFetch::Session, token, &e, now_ms) => {
                Outcome::Fetch(KeyFetch::Session)
            }
            Err(e) => {
                let message = format!("session cookie refused: {e}");
                self.remember_refusal(token, &e, &message, now);
                Outcome::Deny(self.session_refused(req, &message))
            }
        }
    }

    /// A browser with a bad or ended session signs in again; an API client gets 401.
    fn session_refused(&self, req: &impl Headers, message: &str) -> Reply {
        match navigation_target(req) {
            Some(target) => Reply::sign_in(&self.settings.login_path, &target),
            None => Reply::unauthenticated(message, true),
        }
    }

    fn no_credentials(&self, req: &impl Headers) -> Reply {
        match navigation_target(req) {
            Some(target) => Reply::sign_in(&self.settings.login_path, &target),
            None => Reply::unauthenticated(
                "authentication required: send a bearer token from the identity provider, or sign in",
                false,
            ),
        }
    }

    /// The policy service answered a renewal.
    pub fn renewed(
        &mut self,
        old: &str,
        status: u32,
        body: &[u8],
        req: &impl Headers,
        now_ms: u64,
    ) -> (Outcome, Option<String>) {
        let now = now_ms / 1000;
        let outcome = match status {
            200 => match serde_json::from_slice::<RenewResponse>(body) {
                Ok(r) => {
                    self.stats.renewals += 1;
                    let fresh = self.session(&r.session, now_ms, req);
                    if let Outcome::Allow(id) = &fresh {
                        // Requests already in flight with the old cookie need no second renewal.
                        self.session_cache.insert(
                            old.to_string(),
                            id.clone(),
                            now + RENEWED_GRACE_SECONDS,
                            now,
                        );
                        let outcome = fresh.clone();
                        self.count(&outcome);
                        return (outcome, Some(r.set_cookie));
                    }
                    fresh
                }
                Err(e) => Outcome::Deny(Reply::unavailable(&format!(
                    "session renewal answer from the policy service is invalid: {e}"
                ))),
            },
            401 => {
                // The service says why (signed out, expired, left the allowed groups).
                let why = match serde_json::from_slice::<wire::ErrorBody>(body) {
                    Ok(b) => format!("{}; sign in again", b.message),
                    Err(_) => "session has ended; sign in again".to_string(),
                };
                self.refused.insert(
                    old.to_string(),
                    Rc::from(why.as_str()),
                    now + REFUSED_TTL_SECONDS,
                    now,
                );
                Outcome::Deny(self.session_refused(req, &why))
            }
            0 => Outcome::Deny(Reply::unavailable(
                "session cannot be renewed: the policy service did not answer",
            )),
            403 => Outcome::Deny(Reply::unavailable(KEY_REFUSED)),
            s => Outcome::Deny(Reply::unavailable(&format!(
                "session cannot be renewed: the policy service answered {s}"
            ))),
        };
        self.count(&outcome);
        (outcome, None)
    }

    /// The discovery document is known (issuer and JWKS location).
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref()
    }

    /// Takes a fetched discovery document.
    pub fn set_discovery(&mut self, body: &[u8]) -> Result<(), String> {
        let d: Discovery = serde_json::from_slice(body).map_err(|e| {
            format!(
                "discovery document at {} is invalid: {e}",
                self.settings.oidc_discovery_url
            )
        })?;
        self.discovery = Some(d);
        Ok(())
    }

    /// Takes a fetched JWKS; returns the record to share with the other VMs.
    pub fn set_keys(
        &mut self,
        which: KeyFetch,
        body: &[u8],
        now_ms: u64,
    ) -> Result<KeyRecord, String> {
        let jwks: wire::Jwks =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is invalid: {e}"))?;
        let record = KeyRecord {
            fetched_at_ms: now_ms,
            issuer: match which {
                KeyFetch::Idp => self.discovery.as_ref().map(|d| d.issuer.clone()),
                KeyFetch::Session => None,
            },
            jwks,
        };
        self.adopt(which, &record);
        match which {
            KeyFetch::Idp => self.stats.jwks_fetches += 1,
            KeyFetch::Session => self.stats.session_key_fetches += 1,
        }
        Ok(record)
    }

    /// Takes keys another VM fetched, when newer than ours. True when adopted.
    pub fn adopt(&mut self, which: KeyFetch, record: &KeyRecord) -> bool {
        let algs = match which {
            KeyFetch::Idp => self.settings.allowed_algorithms.clone(),
            KeyFetch::Session => self.session_policy().1,
        };
        let source = self.source(which);
        if source.keys.is_some() && source.fetched_at_ms >= record.fetched_at_ms {
            return false;
        }
        source.keys = Some(KeySet::from_jwks(&record.jwks, &algs));
        source.fetched_at_ms = record.fetched_at_ms;
        source.last_failure_ms = None;
        if let (KeyFetch::Idp, Some(issuer)) = (which, &record.issuer) {
            if self.discovery.is_none() {
                self.discovery = Some(Discovery {
                    issuer: issuer.clone(),
                    jwks_uri: String::new(),
                });
            }
        }
        true
    }

    /// A fetch failed: requests that need these keys get 503 for a second.
    pub fn fetch_failed(&mut self, which: KeyFetch, error: String, now_ms: u64) -> Reply {
        let what = match which {
            KeyFetch::Idp => "bearer token cannot be verified: the identity provider",
            KeyFetch::Session => "session cookie cannot be verified: the policy service",
        };
        let source = self.source(which);
        source.last_failure_ms = Some(now_ms);
        source.last_error = error.clone();
        self.stats.unavailable += 1;
        Reply::unavailable(&format!("{what} is unavailable ({error})"))
    }

    fn source(&mut self, which: KeyFetch) -> &mut KeySource {
        match which {
            KeyFetch::Idp => &mut self.idp,
            KeyFetch::Session => &mut self.session,
        }
    }
}

fn session_identity(
    (t, claims): (crate::token::Unverified, crate::token::JwtClaims),
) -> Result<(u64, Rc<Identity>), TokenError> {
    let custom: SessionClaims = serde_json::from_value(serde_json::Value::Object(claims.custom))
        .map_err(|_| TokenError::Malformed("session claims lack sid"))?;
    let username = claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TokenError::NoUsername("sub".into()))?;
    let _ = custom.sid;
    Ok((
        t.exp.unwrap_or(0),
        Rc::new(Identity {
            username,
            admin: custom.adm,
        }),
    ))
}

/// Reads an `Authorization` header: Bearer, Basic, or a refusal saying why not.
pub fn parse_authorization(value: &str) -> Credential<'_> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            Credential::Unsupported("authorization header holds an empty bearer token")
        } else {
            Credential::Bearer(rest)
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        Credential::Basic(value)
    } else {
        Credential::Unsupported("authorization header scheme is not supported: use Bearer")
    }
}

/// `Basic base64(username:token)`: the username lower-cased, as the service stores it.
pub fn parse_basic(value: &str) -> Result<BasicCredential, &'static str> {
    let encoded = value.trim().split_once(' ').map_or("", |(_, v)| v.trim());
    let decoded = base64_decode(encoded).ok_or("basic credentials are not valid base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "basic credentials are not UTF-8")?;
    let (username, token) = text
        .split_once(':')
        .ok_or("basic credentials lack the ':' between username and token")?;
    if username.is_empty() || token.is_empty() {
        return Err("basic credentials need a username and an access token");
    }
    Ok(BasicCredential {
        username: username.to_lowercase(),
        token: token.to_string(),
    })
}

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic uses.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let unpadded = text.trim_end_matches('=');
    if text.len() - unpadded.len() > 2 {
        return None;
    }
    let url_safe: String = unpadded
        .chars()
        .map(|c| match c {
            '+' => Some('-'),
            '/' => Some('_'),
            '-' | '_' => None,
            c => Some(c),
        })
        .collect::<Option<String>>()?;
    wire::base64url_decode(&url_safe)
}

/// The first cookie called `name`.
fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v.trim_matches('"'))
    })
}

/// Where a browser navigation was going; `None` for API calls and non-HTML requests.
fn navigation_target(req: &impl Headers) -> Option<String> {
    let path = req.get(":path").unwrap_or_else(|| "/".to_string());
    let method = req.get(":method").unwrap_or_default();
    if !(method == "GET" || method == "HEAD") || is_api(&path) {
        return None;
    }
    let document = match req.get("sec-fetch-dest") {
        Some(dest) => dest == "document",
        None => req.get("accept").is_some_and(|a| a.contains("text/html")),
    };
    document.then_some(path)
}

/// MLflow's API paths: never redirected, always JSON.
pub fn is_api(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    ["/api", "/ajax-api", "/graphql"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

#[cfg(test)]
mod tests {
    // Plain #[test] runs natively; on wasm32 this makes it a wasm-bindgen test (run in node).
    use super::*;
    use crate::token::tests::{with_claims, Idp, ISS, NOW};
    use jwt_simple::prelude::*;
    use std::collections::HashMap;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    struct Req(HashMap<String, String>);
    impl Headers for Req {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }
    fn req(pairs: &[(&str, &str)]) -> Req {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry(":method".into()).or_insert_with(|| "GET".into());
        m.entry(":path".into())
            .or_insert_with(|| "/api/2.0/mlflow/experiments/search".into());
        Req(m)
    }

    const NOW_MS: u64 = NOW * 1000;

    fn authenticator() -> Authenticator {
        let s = Settings::from_json(
            serde_json::json!({
                "oidc_discovery_url": "http://idp.test/.well-known/openid-configuration",
                "oidc_audience": ["mlflow"],
                "clock_skew_seconds": 5
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        Authenticator::new(Rc::new(s))
    }

    fn with_idp(a: &mut Authenticator, idp: &Idp, at_ms: u64) {
        a.set_discovery(
            format!(r#"{{"issuer":"{ISS}","jwks_uri":"http://idp.test/jwks"}}"#).as_bytes(),
        )
        .unwrap();
        let jwks = Jwks {
            keys: vec![Jwk::ed25519(
                idp.key.key_id().as_deref().unwrap(),
                &idp.key.public_key().to_bytes(),
            )],
        };
        a.set_keys(
            KeyFetch::Idp,
            serde_json::to_vec(&jwks).unwrap().as_slice(),
            at_ms,
        )
        .unwrap();
    }

    use crate::wire::{Jwk, Jwks};

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn no_credentials_browser_is_sent_to_sign_in_and_api_gets_401() {
        let mut a = authenticator();
        let nav = req(&[(":path", "/#/experiments?x=1"), ("accept", "text/html,*/*")]);
        match a.authenticate(&nav, NOW_MS) {
            Outcome::Deny(r) => {
                assert_eq!(r.status, 302);
                assert_eq!(
                    r.headers[0].1,
                    "/oidc/login?next=%2F%23%2Fexperiments%3Fx%3D1"
                );
            }
            o => panic!("{o:?}"),
        }
        for r in [
            req(&[("accept", "text/html")]),
            req(&[(":path", "/"), ("accept", "application/json")]),
            req(&[
                (":path", "/"),
                ("accept", "text/html"),
                ("sec-fetch-dest", "empty"),
            ]),
            req(&[(":path", "/"), (":method", "POST"), ("accept", "text/html")]),
            req(&[
                (":path", "/ajax-api/2.0/mlflow/runs/get"),
                ("accept", "text/html"),
            ]),
            req(&[(":path", "/"), ("x-forwarded-user", "admin@example.com")]),
        ] {
            match a.authenticate(&r, NOW_MS) {
                Outcome::Deny(reply) => {
                    assert_eq!(reply.status, 401);
                    assert!(reply
                        .headers
                        .iter()
                        .any(|h| h.0 == "www-authenticate" && h.1 == "Bearer realm=\"mlflow\""));
                }
                o => panic!("{o:?}"),
            }
        }
        assert_eq!(a.stats.denied, 7);
        assert_eq!(
            a.authenticate(&req(&[(":path", "/oidc/login?next=/")]), NOW_MS),
            Outcome::Public
        );
        assert_eq!(
            a.authenticate(
                &req(&[(":path", "/callback"), ("authorization", "Bearer junk")]),
                NOW_MS
            ),
            Outcome::Public
        );
    }

    #[test]
    fn a_bearer_token_is_verified_once_then_served_from_the_cache_until_exp() {
        let mut a = authenticator();
        let auth = [("authorization", "")];
        let _ = auth;
        let r0 = req(&[("authorization", "Bearer x.y.z")]);
        assert_eq!(
            a.authenticate(&r0, NOW_MS),
            Outcome::Fetch(KeyFetch::Idp),
            "no keys yet"
        );
        let idp = Idp::new("k1");
        with_idp(&mut a, &idp, NOW_MS);
        let token = idp.token(serde_json::json!({"email": "alice@example.com"}));
        let r = req(&[("authorization", &bearer(&token))]);
        for _ in 0..3 {
            match a.authenticate(&r, NOW_MS) {
                Outcome::Allow(id) => assert_eq!(id.username, "alice@example.com"),
                o => panic!("{o:?}"),
            }
        }
        assert_eq!((a.stats.verified, a.stats.cache_hits), (1, 2));
        // Past exp + skew the cache no longer answers and the token is refused.
        match a.authenticate(&r, (NOW + 600 + 5) * 1000) {
            Outcome::Deny(reply) => assert!(reply.body.contains("expired"), "{}", reply.body),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_replayed_forgery_costs_one_signature_check() {
        let mut a = authenticator();
        let idp = Idp::new("k1");
        with_idp(&mut a, &idp, NOW_MS);
        let forged = Idp::new("k1").token(serde_json::json!({"email": "alice@example.com"}));
        let r = req(&[("authorization", &bearer(&forged))]);
        for _ in 0..3 {
            match a.authenticate(&r, NOW_MS) {
                Outcome::Deny(reply) => {
                    assert_eq!(reply.status, 401);
                    assert!(reply.body.contains("signature"), "{}", reply.body);
                }
                o => panic!("{o:?}"),
            }
        }
        assert_eq!(a.stats.verified, 0);
        assert_eq!(a.refused.len(), 1);
    }

    #[test]
    fn a_flood_of_distinct_forgeries_stops_costing_signature_checks() {
        let mut a = authenticator();
        let idp = Idp::new("k1");
        with_idp(&mut a, &idp, NOW_MS);
        let good = idp.token(serde_json::json!({"email": "alice@example.com"}));
        let good_req = req(&[("authorization", &bearer(&good))]);
        assert!(matches!(
            a.authenticate(&good_req, NOW_MS),
            Outcome::Allow(_)
        ));
        let forger = Idp::new("k1");
        let budget = a.settings.max_invalid_signatures_per_second as usize;
        let statuses: Vec<u32> = (0..budget + 5)
            .map(|i| {
                let t = forger.token(serde_json::json!({"email": format!("u{i}@x")}));
                match a.authenticate(&req(&[("authorization", &bearer(&t))]), NOW_MS) {
                    Outcome::Deny(r) => r.status,
                    o => panic!("{o:?}"),
                }
            })
            .collect();
        assert!(statuses[..budget].iter().all(|s| *s == 401));
        assert!(statuses[budget..].iter().all(|s| *s == 503));
        // Verified tokens keep working; the next second checks signatures again.
        assert!(matches!(
            a.authenticate(&good_req, NOW_MS),
            Outcome::Allow(_)
        ));
        let next = forger.token(serde_json::json!({"email": "next@x"}));
        match a.authenticate(&req(&[("authorization", &bearer(&next))]), NOW_MS + 1000) {
            Outcome::Deny(r) => assert_eq!(r.status, 401),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_rotated_key_without_kid_is_picked_up_by_one_refetch() {
        let mut a = authenticator();
        let old = Idp::new("k1");
        with_idp(&mut a, &old, NOW_MS);
        // An IdP that leaves `kid` out of its tokens, after rotating its key.
        let rotated = Ed25519KeyPair::generate();
        let mut c = Claims::with_custom_claims(
            serde_json::json!({"email": "bob@x"}),
            Duration::from_secs(600),
        );
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        c.invalid_before = None;
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
        let token = rotated
            .sign(c.with_issuer(ISS).with_audience("mlflow"))
            .unwrap();
        let r = req(&[("authorization", &bearer(&token))]);
        let later = NOW_MS + a.settings.jwks_refetch_interval_ms;
        assert_eq!(a.authenticate(&r, later), Outcome::Fetch(KeyFetch::Idp));
        let jwks = Jwks {
            keys: vec![Jwk::ed25519("k2", &rotated.public_key().to_bytes())],
        };
        a.set_keys(
            KeyFetch::Idp,
            serde_json::to_vec(&jwks).unwrap().as_slice(),
            later,
        )
        .unwrap();
        assert!(matches!(a.authenticate(&r, later), Outcome::Allow(_)));
        // A kid-less forgery right after is refused, not refetched again.
        let forged = with_claims(
            &token,
            serde_json::json!({"iss": ISS, "aud": "mlflow", "exp": NOW + 600, "email": "x@y"}),
        );
        let r = req(&[("authorization", &bearer(&forged))]);
        assert!(
            matches!(a.authenticate(&r, later + 1), Outcome::Deny(ref reply) if reply.status == 401)
        );
    }

    #[test]
    fn an_unknown_kid_refetches_once_per_interval() {
        let mut a = authenticator();
        let idp = Idp::new("k1");
        with_idp(&mut a, &idp, NOW_MS);
        let rotated = Idp::new("k2");
        let token = rotated.token(serde_json::json!({"email": "bob@example.com"}));
        let r = req(&[("authorization", &bearer(&token))]);
        // Fetched just now: no refetch yet; the token is refused.
        assert!(matches!(a.authenticate(&r, NOW_MS + 10), Outcome::Deny(_)));
        let later = NOW_MS + a.settings.jwks_refetch_interval_ms;
        assert_eq!(a.authenticate(&r, later), Outcome::Fetch(KeyFetch::Idp));
        with_idp(&mut a, &rotated, later);
        assert!(matches!(a.authenticate(&r, later), Outcome::Allow(_)));
        // A kid that stays unknown after the refetch is refused until the next interval.
        let stranger = Idp::new("k3").token(serde_json::json!({"email": "x@y"}));
        let r = req(&[("authorization", &bearer(&stranger))]);
        match a.authenticate(&r, later + 5) {
            Outcome::Deny(reply) => assert!(reply.body.contains("unknown key"), "{}", reply.body),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn failed_fetches_fail_closed_and_back_off() {
        let mut a = authenticator();
        let r = req(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(a.authenticate(&r, NOW_MS), Outcome::Fetch(KeyFetch::Idp));
        let reply = a.fetch_failed(KeyFetch::Idp, "connection refused".into(), NOW_MS);
        assert_eq!(reply.status, 503);
        match a.authenticate(&r, NOW_MS + 500) {
            Outcome::Deny(reply) => {
                assert_eq!(reply.status, 503);
                assert!(reply.body.contains("connection refused"));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            a.authenticate(&r, NOW_MS + 1500),
            Outcome::Fetch(KeyFetch::Idp)
        );
    }

    fn session_key() -> Ed25519KeyPair {
        Ed25519KeyPair::generate().with_key_id("s1")
    }

    fn session_cookie(key: &Ed25519KeyPair, sid: &str, adm: bool, exp: u64) -> String {
        let mut c = Claims::with_custom_claims(
            SessionClaims {
                sid: sid.into(),
                adm,
            },
            Duration::from_secs(1),
        );
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        c.invalid_before = None;
        c.expires_at = Some(UnixTimeStamp::from_secs(exp));
        key.sign(
            c.with_issuer(wire::SESSION_ISSUER)
                .with_audience(wire::SESSION_AUDIENCE)
                .with_subject("alice@example.com"),
        )
        .unwrap()
    }

    fn with_session_keys(a: &mut Authenticator, key: &Ed25519KeyPair) {
        let jwks = Jwks {
            keys: vec![Jwk::ed25519("s1", &key.public_key().to_bytes())],
        };
        a.set_keys(
            KeyFetch::Session,
            serde_json::to_vec(&jwks).unwrap().as_slice(),
            NOW_MS,
        )
        .unwrap();
    }

    #[test]
    fn session_cookies_verify_renew_and_refuse() {
        let mut a = authenticator();
        let key = session_key();
        let live = session_cookie(&key, "sid-1", true, NOW + 300);
        let cookie = format!("other=1; mlflow_session={live}; x=y");
        let r = req(&[("cookie", &cookie), (":path", "/"), ("accept", "text/html")]);
        assert_eq!(
            a.authenticate(&r, NOW_MS),
            Outcome::Fetch(KeyFetch::Session)
        );
        with_session_keys(&mut a, &key);
        match a.authenticate(&r, NOW_MS) {
            Outcome::Allow(id) => assert_eq!(
                *id,
                Identity {
                    username: "alice@example.com".into(),
                    admin: true
                }
            ),
            o => panic!("{o:?}"),
        }
        // Expired: renewed through the policy service.
        let expired = session_cookie(&key, "sid-1", false, NOW - 100);
        let cookie = format!("mlflow_session={expired}");
        let r = req(&[
            ("cookie", &cookie),
            (":path", "/ajax-api/2.0/mlflow/runs/get"),
        ]);
        assert_eq!(a.authenticate(&r, NOW_MS), Outcome::Renew(expired.clone()));
        let fresh = session_cookie(&key, "sid-1", false, NOW + 300);
        let answer = serde_json::json!({"session": fresh, "expires_at": NOW + 300, "set_cookie": "mlflow_session=new"});
        let (o, set_cookie) = a.renewed(&expired, 200, answer.to_string().as_bytes(), &r, NOW_MS);
        assert!(matches!(o, Outcome::Allow(_)), "{o:?}");
        assert_eq!(set_cookie.as_deref(), Some("mlflow_session=new"));
        // Ended session: API gets 401, and the refusal is remembered.
        let ended = session_cookie(&key, "sid-2", false, NOW - 100);
        let cookie = format!("mlflow_session={ended}");
        let r = req(&[("cookie", &cookie), (":path", "/api/2.0/mlflow/runs/get")]);
        assert_eq!(a.authenticate(&r, NOW_MS), Outcome::Renew(ended.clone()));
        let reason =
            br#"{"error_code":"UNAUTHENTICATED","message":"session has ended: it was signed out"}"#;
        let (o, _) = a.renewed(&ended, 401, reason, &r, NOW_MS);
        assert!(
            matches!(o, Outcome::Deny(ref reply) if reply.body.contains("signed out")),
            "{o:?}"
        );
        assert!(
            matches!(o, Outcome::Deny(ref reply) if reply.status == 401),
            "{o:?}"
        );
        assert!(
            matches!(a.authenticate(&r, NOW_MS), Outcome::Deny(ref reply) if reply.status == 401)
        );
        // Service down during renewal: 503, never a pass.
        let other = session_cookie(&key, "sid-3", false, NOW - 100);
        let (o, _) = a.renewed(&other, 0, b"", &r, NOW_MS);
        assert!(
            matches!(o, Outcome::Deny(ref reply) if reply.status == 503),
            "{o:?}"
        );
        // Tampered: 401 for the API, sign-in for a browser.
        let tampered = with_claims(
            &live,
            serde_json::json!({"iss": wire::SESSION_ISSUER, "aud": wire::SESSION_AUDIENCE, "exp": NOW + 300, "sub": "admin@example.com", "sid": "x", "adm": true}),
        );
        let cookie = format!("mlflow_session={tampered}");
        let api = req(&[("cookie", &cookie)]);
        assert!(
            matches!(a.authenticate(&api, NOW_MS), Outcome::Deny(ref reply) if reply.status == 401)
        );
        let nav = req(&[("cookie", &cookie), (":path", "/"), ("accept", "text/html")]);
        assert!(
            matches!(a.authenticate(&nav, NOW_MS), Outcome::Deny(ref reply) if reply.status == 302)
        );
    }

    #[test]
    fn a_session_cookie_is_not_a_bearer_token_and_vice_versa() {
        let mut a = authenticator();
        let key = session_key();
        with_session_keys(&mut a, &key);
        let idp = Idp::new("k1");
        with_idp(&mut a, &idp, NOW_MS);
        let cookie_value = session_cookie(&key, "sid-1", true, NOW + 300);
        let r = req(&[("cookie", &format!("mlflow_session={cookie_value}"))]);
        assert!(matches!(a.authenticate(&r, NOW_MS), Outcome::Allow(_)));
        let as_bearer = req(&[("authorization", &bearer(&cookie_value))]);
        assert!(
            matches!(a.authenticate(&as_bearer, NOW_MS), Outcome::Deny(ref reply) if reply.status == 401)
        );
        let id_token = idp.token(serde_json::json!({"email": "a@x"}));
        let as_cookie = req(&[("cookie", &format!("mlflow_session={id_token}"))]);
        assert!(
            matches!(a.authenticate(&as_cookie, NOW_MS), Outcome::Deny(ref reply) if reply.status == 401)
        );
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_refused() {
        let mut a = authenticator();
        for value in [
            "Bearer ",
            "Token abc",
            "bearer",
            "Basic !!!!",
            "Basic YWxpY2U=",
            "Basic OnRva2Vu",
        ] {
            let r = req(&[("authorization", value)]);
            assert!(
                matches!(a.authenticate(&r, NOW_MS), Outcome::Deny(ref reply) if reply.status == 401),
                "{value}"
            );
        }
    }

    #[test]
    fn access_tokens_are_checked_by_the_service_once_then_cached_by_digest() {
        let mut a = authenticator();
        // "Alice:mlf_1234abcd_secret", as MLflow clients send it.
        let value = "Basic QWxpY2U6bWxmXzEyMzRhYmNkX3NlY3JldA==";
        let r = req(&[("authorization", value)]);
        let key = match a.authenticate(&r, NOW_MS) {
            Outcome::CheckBasic { key, credential } => {
                assert_eq!(credential.username, "alice");
                assert_eq!(credential.token, "mlf_1234abcd_secret");
                key
            }
            o => panic!("{o:?}"),
        };
        let answer = serde_json::json!({"username": "alice@example.com", "admin": false, "expires_at": NOW + 3600});
        let o = a.basic_checked(key, 200, answer.to_string().as_bytes(), NOW_MS);
        assert!(
            matches!(o, Outcome::Allow(ref id) if id.username == "alice@example.com"),
            "{o:?}"
        );
        assert!(matches!(
            a.authenticate(&r, NOW_MS + 1000),
            Outcome::Allow(_)
        ));
        // The cached answer ends after access_token_cache_seconds: a revocation's bound.
        let later = NOW_MS + a.settings.access_token_cache_seconds * 1000;
        assert!(matches!(
            a.authenticate(&r, later),
            Outcome::CheckBasic { .. }
        ));
        // Refusals are cached too, and say why; no answer is 503.
        let bad = req(&[("authorization", "Basic Ym9iOm5vcGU=")]);
        let Outcome::CheckBasic { key, .. } = a.authenticate(&bad, NOW_MS) else {
            panic!()
        };
        let o = a.basic_checked(
            key,
            401,
            br#"{"error_code":"UNAUTHENTICATED","message":"access token is revoked"}"#,
            NOW_MS,
        );
        assert!(
            matches!(o, Outcome::Deny(ref r) if r.status == 401 && r.body.contains("revoked")),
            "{o:?}"
        );
        assert!(matches!(a.authenticate(&bad, NOW_MS), Outcome::Deny(ref r) if r.status == 401));
        let other = req(&[("authorization", "Basic Y2Fyb2w6eA==")]);
        let Outcome::CheckBasic { key, .. } = a.authenticate(&other, NOW_MS) else {
            panic!()
        };
        assert!(
            matches!(a.basic_checked(key, 0, b"", NOW_MS), Outcome::Deny(ref r) if r.status == 503)
        );
        // An answer past the token's own expiry is never cached beyond it.
        let Outcome::CheckBasic { key, .. } = a.authenticate(&other, NOW_MS) else {
            panic!()
        };
        let answer = serde_json::json!({"username": "carol", "expires_at": NOW + 2});
        assert!(matches!(
            a.basic_checked(key, 200, answer.to_string().as_bytes(), NOW_MS),
            Outcome::Allow(_)
        ));
        assert!(matches!(
            a.authenticate(&other, NOW_MS + 2000),
            Outcome::CheckBasic { .. }
        ));
        // The service refusing the filter's own key is an outage, not a verdict on the token.
        let Outcome::CheckBasic { key, .. } = a.authenticate(&other, NOW_MS + 2000) else {
            panic!()
        };
        let o = a.basic_checked(key, 403, b"{}", NOW_MS + 2000);
        assert!(
            matches!(o, Outcome::Deny(ref r) if r.status == 503 && r.body.contains("AUTHZ_SHARED_KEY")),
            "{o:?}"
        );
        assert!(
            matches!(
                a.authenticate(&other, NOW_MS + 2000),
                Outcome::CheckBasic { .. }
            ),
            "not cached"
        );
    }

    #[test]
    fn with_provisioning_a_new_bearer_token_is_shown_to_the_service_once() {
        let s = Settings::from_json(
            serde_json::json!({
                "oidc_discovery_url": "http://idp.test/.well-known/openid-configuration",
                "oidc_audience": ["mlflow"],
                "oidc_provision_on_bearer_auth": true
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let mut a = Authenticator::new(Rc::new(s));
        let idp = Idp::new("k1");
        with_idp(&mut a, &idp, NOW_MS);
        let token =
            idp.token(serde_json::json!({"email": "ivan@example.com", "groups": ["mlflow"]}));
        let r = req(&[("authorization", &bearer(&token))]);
        let until = match a.authenticate(&r, NOW_MS) {
            Outcome::CheckBearer { until, credential } => {
                assert_eq!(credential.username, "ivan@example.com");
                assert_eq!(credential.claims["groups"], serde_json::json!(["mlflow"]));
                until
            }
            o => panic!("{o:?}"),
        };
        let answer = br#"{"username": "ivan@example.com", "admin": false, "expires_at": 0}"#;
        assert!(matches!(
            a.bearer_checked(&token, until, 200, answer, NOW_MS),
            Outcome::Allow(_)
        ));
        assert!(
            matches!(a.authenticate(&r, NOW_MS), Outcome::Allow(_)),
            "cached: no second call"
        );
        // Refused by the gate: remembered; no answer: 503, never a pass.
        let other = idp.token(serde_json::json!({"email": "judy@example.com"}));
        let r = req(&[("authorization", &bearer(&other))]);
        let Outcome::CheckBearer { until, .. } = a.authenticate(&r, NOW_MS) else {
            panic!()
        };
        assert!(
            matches!(a.bearer_checked(&other, until, 0, b"", NOW_MS), Outcome::Deny(ref d) if d.status == 503)
        );
        let Outcome::CheckBearer { until, .. } = a.authenticate(&r, NOW_MS) else {
            panic!()
        };
        let no = br#"{"error_code":"UNAUTHENTICATED","message":"judy@example.com is not in an allowed group"}"#;
        assert!(
            matches!(a.bearer_checked(&other, until, 401, no, NOW_MS), Outcome::Deny(ref d) if d.status == 401)
        );
        assert!(
            matches!(a.authenticate(&r, NOW_MS), Outcome::Deny(ref d) if d.body.contains("allowed group"))
        );
    }

    #[test]
    fn keys_fetched_by_another_vm_are_adopted_only_when_newer() {
        let mut a = authenticator();
        let idp = Idp::new("k1");
        let record = KeyRecord {
            fetched_at_ms: NOW_MS,
            issuer: Some(ISS.into()),
            jwks: Jwks {
                keys: vec![Jwk::ed25519("k1", &idp.key.public_key().to_bytes())],
            },
        };
        assert!(a.adopt(KeyFetch::Idp, &record));
        assert!(!a.adopt(KeyFetch::Idp, &record));
        let token = idp.token(serde_json::json!({"email": "a@x"}));
        assert!(matches!(
            a.authenticate(&req(&[("authorization", &bearer(&token))]), NOW_MS),
            Outcome::Allow(_)
        ));
    }

    #[test]
    fn api_paths_are_recognised_by_whole_segment() {
        assert!(is_api("/api/2.0/mlflow/runs/get"));
        assert!(is_api("/ajax-api/2.0/mlflow/runs/get?x=1"));
        assert!(is_api("/graphql"));
        assert!(!is_api("/apis"));
        assert!(!is_api("/static-files/app.js"));
    }
}
