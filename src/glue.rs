//! The thin layer between Envoy (proxy-wasm ABI) and [`crate::authn`].
//! The root context parses the settings once and shares one [`Authenticator`] with
//! every HTTP context of its VM; callouts pause the request and resume it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

use crate::authn::{Authenticator, Headers, KeyFetch, KeyRecord, Outcome};
use crate::authz::{Authorizer, Verdict};
use crate::cache::Identity;
use crate::mlflow::{self, Access, After, Plan, Planner, Routed};
use crate::reply::Reply;
use crate::settings::{Settings, Target};
use crate::wire::{
    DecideRequest, Listing, ListingRequest, RenewRequest, ResourceEvent, BASIC_CHECK_PATH,
    BEARER_CHECK_PATH, DECIDE_PATH, EPOCH_PATH, EVENTS_PATH, LISTING_PATH, SERVICE_KEY_ENV,
    SERVICE_KEY_HEADER, SESSION_KEYS_PATH, SESSION_RENEW_PATH,
};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const METRIC_PREFIX: &str = "mlflow_authz";
/// Request lines whose route and plan each VM keeps.
const PLANS_KEPT: usize = 2048;
/// Largest callout answer read (a JWKS or a discovery document).
const MAX_CALLOUT_BODY: usize = 256 * 1024;

fn shared_key(which: KeyFetch) -> &'static str {
    match which {
        KeyFetch::Idp => "mlflow-authz/idp-keys",
        KeyFetch::Session => "mlflow-authz/session-keys",
    }
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// A callout's status: 0 when it has no headers (timed out, or the connection failed).
fn callout_status(num_headers: usize) -> u32 {
    if num_headers == 0 {
        return 0;
    }
    hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The first `size` bytes of a callout's answer.
fn callout_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keys another VM of this Envoy already fetched.
fn adopt_shared(auth: &mut Authenticator, which: KeyFetch) -> bool {
    match hostcalls::get_shared_data(shared_key(which)) {
        Ok((Some(bytes), _)) => match serde_json::from_slice::<KeyRecord>(&bytes) {
            Ok(record) => auth.adopt(which, &record),
            Err(_) => false,
        },
        _ => false,
    }
}

#[derive(Default)]
struct Root {
    auth: Option<Rc<RefCell<Authenticator>>>,
    authz: Option<Rc<RefCell<Authorizer>>>,
    planner: Option<Rc<RefCell<Planner>>>,
    /// Metric ids and the values already flushed.
    metrics: Vec<(u32, u64)>,
    /// When the policy epoch was last asked for (ms), and whether that call is out.
    epoch_asked_at: u64,
    epoch_in_flight: bool,
}

impl Root {
    /// Counters of both halves, in the order their metrics were defined.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        if let Some(auth) = &self.auth {
            out.extend(auth.borrow().stats.fields());
        }
        if let Some(authz) = &self.authz {
            out.extend(authz.borrow().stats.fields());
        }
        out
    }

    /// Asks the policy service for its epoch, so cached decisions follow grant changes.
    fn poll_epoch(&mut self, now: u64) {
        let Some(auth) = &self.auth else { return };
        let auth = auth.borrow();
        let s = &auth.settings;
        // A lost answer must not stop polling forever: retry after a timeout's worth.
        let wait = if self.epoch_in_flight {
            s.callout_timeout_ms.max(s.epoch_poll_interval_ms) * 2
        } else {
            s.epoch_poll_interval_ms
        };
        if now.saturating_sub(self.epoch_asked_at) < wait {
            return;
        }
        let cluster = s.policy_service_cluster.clone();
        let mut headers = vec![
            (":method", "GET"),
            (":path", EPOCH_PATH),
            (":authority", cluster.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(key) = &auth.service_key {
            headers.push((SERVICE_KEY_HEADER, key.as_str()));
        }
        let timeout = Duration::from_millis(s.callout_timeout_ms);
        self.epoch_asked_at = now;
        self.epoch_in_flight =
            hostcalls::dispatch_http_call(&cluster, headers, None, vec![], timeout).is_ok();
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        self.epoch_in_flight = false;
        let Some(authz) = &self.authz else { return };
        let status = callout_status(num_headers);
        let body = callout_body(body_size.min(MAX_CALLOUT_BODY));
        if let Err(e) = authz.borrow_mut().epoch_polled(status, &body, now_ms()) {
            log::debug!("{e}");
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let settings = match Settings::from_json(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let mut auth = Authenticator::new(Rc::new(settings));
        auth.service_key = std::env::var(SERVICE_KEY_ENV)
            .ok()
            .filter(|k| !k.is_empty());
        if auth.service_key.is_none() {
            log::warn!("{SERVICE_KEY_ENV} is not in the VM environment: calls to the policy service carry no key");
        }
        let authz = Authorizer::new(
            auth.settings.decision_cache_max_entries,
            auth.settings.epoch_poll_interval_ms,
        );
        let tick = auth.settings.epoch_poll_interval_ms.min(1_000);
        self.auth = Some(Rc::new(RefCell::new(auth)));
        self.authz = Some(Rc::new(RefCell::new(authz)));
        self.planner = Some(Rc::new(RefCell::new(Planner::new(PLANS_KEPT))));
        self.metrics = self
            .counters()
            .iter()
            .filter_map(|(name, _)| {
                hostcalls::define_metric(MetricType::Counter, &format!("{METRIC_PREFIX}.{name}"))
                    .ok()
                    .map(|id| (id, 0))
            })
            .collect();
        let _ = hostcalls::set_tick_period(Duration::from_millis(tick));
        true
    }

    fn on_tick(&mut self) {
        let Some(auth) = &self.auth else { return };
        if let Ok(mut auth) = auth.try_borrow_mut() {
            adopt_shared(&mut auth, KeyFetch::Idp);
            adopt_shared(&mut auth, KeyFetch::Session);
        }
        self.poll_epoch(now_ms());
        // Counted in memory on the request path; flushed here, off it.
        let counters = self.counters();
        for ((id, flushed), (_, value)) in self.metrics.iter_mut().zip(counters) {
            if value > *flushed {
                let _ = hostcalls::increment_metric(*id, (value - *flushed) as i64);
                *flushed = value;
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            auth: self.auth.clone()?,
            authz: self.authz.clone()?,
            planner: self.planner.clone()?,
            pending: None,
            set_cookie: None,
            request_headers: Vec::new(),
            now: 0,
            method: String::new(),
            path: String::new(),
            routed: None,
            request_ended: false,
            body: None,
            phase: Phase::Authenticating,
            user: None,
            plan: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The callout a paused request waits for.
enum Pending {
    Discovery,
    Keys(KeyFetch),
    Renew(String),
    /// An access token check, by the digest its answer is cached under.
    Basic([u8; 32]),
    /// A verified bearer token shown to the service, and until when to cache the answer.
    Bearer(String, u64),
    /// What the user holds on the request's resources.
    Decide(DecideRequest),
    /// A search answer being filtered (the response is paused).
    Listing,
    /// A resource event being reported (the response is paused).
    Report,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Authenticating,
    /// Authenticated; the route reads ids from the body, which is still coming.
    WaitingBody,
    Deciding,
    /// Sent on to MLflow.
    Forwarded,
    /// Answered by the filter itself.
    Answered,
    /// MLflow's answer is held until it is filtered or its event reported.
    HoldingResponse,
}

struct Http {
    auth: Rc<RefCell<Authenticator>>,
    authz: Rc<RefCell<Authorizer>>,
    planner: Rc<RefCell<Planner>>,
    pending: Option<Pending>,
    /// A renewed session cookie to hand to the browser with the response.
    set_cookie: Option<String>,
    /// The request's headers as they came (see [`Headers`] below).
    request_headers: Vec<(String, String)>,
    /// The clock when the request was last looked at: one host call serves the
    /// credential check and the decision.
    now: u64,
    method: String,
    path: String,
    routed: Option<Routed>,
    /// The whole request has arrived.
    request_ended: bool,
    /// The request body, read when the route reads ids from it.
    body: Option<Vec<u8>>,
    phase: Phase,
    user: Option<Rc<Identity>>,
    plan: Option<Plan>,
}

impl Headers for Http {
    /// From the copy taken when the request came in (one host call for all of them,
    /// not one per header); the first value, as Envoy's own lookup gives.
    fn get(&self, name: &str) -> Option<String> {
        self.request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

impl Http {
    /// Authenticates and acts on the outcome; `Continue` means forward now.
    fn run(&mut self) -> Action {
        let auth = self.auth.clone();
        // Each round either ends the request or waits for a callout; adopting
        // another VM's keys is the only reason to go round again.
        for _ in 0..3 {
            self.now = now_ms();
            let outcome = auth.borrow_mut().authenticate(self, self.now);
            match outcome {
                outcome @ (Outcome::Allow(_) | Outcome::Public | Outcome::Deny(_)) => {
                    return self.act_on(outcome)
                }
                Outcome::Fetch(which) => {
                    if adopt_shared(&mut auth.borrow_mut(), which) {
                        continue;
                    }
                    return self.fetch(which);
                }
                Outcome::CheckBearer { until, credential } => {
                    let body = serde_json::to_vec(&credential).unwrap_or_default();
                    return self.call(
                        Pending::Bearer(credential.token, until),
                        CalloutTarget::Service,
                        "POST",
                        BEARER_CHECK_PATH,
                        Some(&body),
                    );
                }
                Outcome::CheckBasic { key, credential } => {
                    let body = serde_json::to_vec(&credential).unwrap_or_default();
                    return self.call(
                        Pending::Basic(key),
                        CalloutTarget::Service,
                        "POST",
                        BASIC_CHECK_PATH,
                        Some(&body),
                    );
                }
                Outcome::Renew(old) => {
                    let body = serde_json::to_vec(&RenewRequest {
                        session: old.clone(),
                    })
                    .unwrap_or_default();
                    return self.call(
                        Pending::Renew(old),
                        CalloutTarget::Service,
                        "POST",
                        SESSION_RENEW_PATH,
                        Some(&body),
                    );
                }
            }
        }
        self.answer(&Reply::unavailable("keys could not be loaded; try again"))
    }

    /// Forwards (with the identity, or stripped of any) or answers. Outcomes that
    /// need a callout do not reach here.
    fn act_on(&mut self, outcome: Outcome) -> Action {
        let settings = self.auth.borrow().settings.clone();
        let header = settings.identity_header.as_str();
        match outcome {
            Outcome::Allow(id) => {
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    header,
                    Some(&id.username),
                );
                self.user = Some(id);
                // The sign-in routes (public paths) belong to the policy service, which
                // checks its callers itself; they are not MLflow routes to authorize.
                if settings.is_public(&self.path) {
                    self.phase = Phase::Forwarded;
                    return Action::Continue;
                }
                self.authorize()
            }
            Outcome::Public => {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, header, None);
                self.phase = Phase::Forwarded;
                Action::Continue
            }
            Outcome::Deny(reply) => self.answer(&reply),
            _ => self.answer(&Reply::unavailable(
                "the policy service gave no usable answer",
            )),
        }
    }

    /// The request's route, matched once.
    fn routed(&mut self) -> Routed {
        if let Some(routed) = &self.routed {
            return routed.clone();
        }
        let routed = self.planner.borrow_mut().route(&self.method, &self.path);
        self.routed = Some(routed.clone());
        routed
    }

    /// The user is known: plan the request (once its body is in, when the route
    /// reads it) and decide.
    fn authorize(&mut self) -> Action {
        let routed = self.routed();
        if routed.reads_body() && !self.request_ended {
            // The proxy-wasm ABI delivers no body while the headers are held, so the
            // headers go on now (MLflow acts on nothing without the body) and the body
            // is held in `on_http_request_body` until the request is decided; a refusal
            // then resets the stream to MLflow.
            self.phase = Phase::WaitingBody;
            return Action::Continue;
        }
        let planned =
            self.planner
                .borrow_mut()
                .plan(&routed, &self.method, &self.path, self.body.as_deref());
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => return self.answer(&Reply::bad_request(&e.message)),
        };
        let Some(user) = self.user.clone() else {
            return self.answer(&Reply::unavailable("the request lost its user"));
        };
        let open_listing = matches!(&plan.access, Access::Resources(r) if r.is_empty());
        let verdict = match plan.after {
            After::Filter(_) if open_listing => self
                .authz
                .borrow_mut()
                .decide_listing(&user.username, self.now),
            _ => self
                .authz
                .borrow_mut()
                .decide(&user.username, &plan.access, self.now),
        };
        self.plan = Some(plan);
        self.act_on_verdict(verdict)
    }

    fn act_on_verdict(&mut self, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Allow => {
                self.phase = Phase::Forwarded;
                Action::Continue
            }
            Verdict::Deny(reply) => self.answer(&reply),
            Verdict::Ask(request) => {
                self.phase = Phase::Deciding;
                let body = serde_json::to_vec(&request).unwrap_or_default();
                self.call(
                    Pending::Decide(request),
                    CalloutTarget::Service,
                    "POST",
                    DECIDE_PATH,
                    Some(&body),
                )
            }
        }
    }

    /// MLflow answered with a 2xx that must be filtered or reported: say whether to
    /// hold it (its body is then read in full).
    fn holds_response(&self) -> bool {
        let (Some(plan), Some(user)) = (&self.plan, &self.user) else {
            return false;
        };
        match &plan.after {
            After::Nothing => false,
            After::Filter(_) => !self.authz.borrow().is_admin(&user.username, now_ms()),
            After::ReportCreated { .. } | After::Report(_) => true,
        }
    }

    /// The whole held answer is in: filter it or report what it did.
    fn on_held_response(&mut self, body: Vec<u8>) -> Action {
        let (Some(plan), Some(user)) = (self.plan.clone(), self.user.clone()) else {
            return Action::Continue;
        };
        match plan.after {
            After::Nothing => Action::Continue,
            // No body: no rows to filter (MLflow answers a HEAD on a search with 400 today,
            // so this holds nothing up should it ever answer 200).
            After::Filter(_) if body.is_empty() => Action::Continue,
            After::Filter(listing) => self.filter_listing(listing, &user.username, body),
            After::ReportCreated { kind } => {
                match mlflow::created_event(kind, &user.username, &body) {
                    Ok(event) => self.report(&event),
                    Err(e) => {
                        log::error!("{e}");
                        Action::Continue
                    }
                }
            }
            After::Report(event) => self.report(&event),
        }
    }

    fn filter_listing(&mut self, listing: Listing, username: &str, body: Vec<u8>) -> Action {
        let (path, query) = match self.path.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (self.path.clone(), String::new()),
        };
        let request = ListingRequest {
            username: username.to_string(),
            listing,
            method: self.method.clone(),
            path,
            query,
            request_body: self
                .body
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            response_body: String::from_utf8_lossy(&body).into_owned(),
        };
        let payload = serde_json::to_vec(&request).unwrap_or_default();
        self.call(
            Pending::Listing,
            CalloutTarget::Service,
            "POST",
            LISTING_PATH,
            Some(&payload),
        )
    }

    fn report(&mut self, event: &ResourceEvent) -> Action {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        self.call(
            Pending::Report,
            CalloutTarget::Service,
            "POST",
            EVENTS_PATH,
            Some(&payload),
        )
    }

    /// The held answer must not go out (its rows could not be filtered). Its headers
    /// have: Envoy resets the stream, so the client sees a failed call, never rows it
    /// may not read, nor an empty page that looks like a real one.
    fn refuse_response(&mut self, reply: &Reply) {
        log::warn!("{} {}: {}", self.method, self.path, reply.body);
        self.phase = Phase::Answered;
        let _ = hostcalls::send_http_response(reply.status, vec![], Some(reply.body.as_bytes()));
    }

    fn set_response_body(&mut self, body: &[u8]) {
        let _ = hostcalls::set_buffer(
            proxy_wasm::types::BufferType::HttpResponseBody,
            0,
            usize::MAX,
            body,
        );
    }

    /// A response-phase callout came back (or failed): release the answer.
    fn held_response_done(&mut self, pending: Pending, status: u32, body: &[u8]) {
        match pending {
            Pending::Listing if status == 200 => self.set_response_body(body),
            Pending::Listing => {
                let why = if status == 0 {
                    "no answer in time".to_string()
                } else {
                    format!("status {status}")
                };
                self.refuse_response(&Reply::unavailable(&format!(
                    "the search answer cannot be filtered to what you may read: the policy service gave {why}"
                )));
                return;
            }
            Pending::Report if status != 200 => {
                // MLflow already did it; its answer goes out, the grant change is lost.
                log::error!(
                    "the policy service did not record a resource event of {} {} (status {status})",
                    self.method,
                    self.path
                );
            }
            Pending::Report => {
                // The event moved the epoch: this VM drops its decisions now, so the
                // user's next call here sees the change (other VMs at their next poll).
                let _ = self.authz.borrow_mut().epoch_polled(status, body, now_ms());
            }
            _ => {}
        }
        self.phase = Phase::Forwarded;
        let _ = hostcalls::resume_http_response();
    }

    fn fetch(&mut self, which: KeyFetch) -> Action {
        match which {
            KeyFetch::Session => self.call(
                Pending::Keys(KeyFetch::Session),
                CalloutTarget::Service,
                "GET",
                SESSION_KEYS_PATH,
                None,
            ),
            KeyFetch::Idp => {
                let auth = self.auth.borrow();
                let jwks_uri = auth
                    .discovery()
                    .map(|d| d.jwks_uri.clone())
                    .filter(|u| !u.is_empty());
                let discovery_url = auth.settings.oidc_discovery_url.clone();
                drop(auth);
                match jwks_uri {
                    Some(uri) => self.call_url(Pending::Keys(KeyFetch::Idp), &uri),
                    None => self.call_url(Pending::Discovery, &discovery_url),
                }
            }
        }
    }

    fn call_url(&mut self, pending: Pending, url: &str) -> Action {
        match Target::parse(url) {
            Ok(t) => self.call(
                pending,
                CalloutTarget::Idp(t.authority),
                "GET",
                &t.path,
                None,
            ),
            Err(e) => self.failed(&pending, format!("cannot fetch {url}: {e}")),
        }
    }

    fn call(
        &mut self,
        pending: Pending,
        target: CalloutTarget,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Action {
        let auth = self.auth.borrow();
        let s = &auth.settings;
        let (cluster, authority) = match &target {
            CalloutTarget::Idp(authority) => (s.idp_cluster.clone(), authority.clone()),
            CalloutTarget::Service => (
                s.policy_service_cluster.clone(),
                s.policy_service_cluster.clone(),
            ),
        };
        let timeout = Duration::from_millis(s.callout_timeout_ms);
        let key = match target {
            CalloutTarget::Service => auth.service_key.clone(),
            CalloutTarget::Idp(_) => None,
        };
        drop(auth);
        let mut headers = vec![
            (":method", method),
            (":path", path),
            (":authority", authority.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(key) = &key {
            headers.push((SERVICE_KEY_HEADER, key.as_str()));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        match hostcalls::dispatch_http_call(&cluster, headers, body, vec![], timeout) {
            Ok(_) => {
                self.pending = Some(pending);
                Action::Pause
            }
            Err(e) => self.failed(
                &pending,
                format!("callout to cluster {cluster} failed: {e:?}"),
            ),
        }
    }

    /// A callout failed: fail closed with 503.
    fn failed(&mut self, pending: &Pending, error: String) -> Action {
        let which = match pending {
            Pending::Discovery | Pending::Keys(KeyFetch::Idp) => KeyFetch::Idp,
            Pending::Keys(KeyFetch::Session) => KeyFetch::Session,
            Pending::Renew(_) => {
                return self.answer(&Reply::unavailable(&format!(
                    "session cannot be renewed: {error}"
                )))
            }
            Pending::Basic(_) => {
                return self.answer(&Reply::unavailable(&format!(
                    "access token cannot be checked: {error}"
                )))
            }
            Pending::Bearer(..) => {
                return self.answer(&Reply::unavailable(&format!(
                    "bearer token's user cannot be checked: {error}"
                )))
            }
            Pending::Decide(_) => {
                self.authz.borrow_mut().stats.decide_errors += 1;
                return self.answer(&Reply::unavailable(&format!(
                    "permissions cannot be checked: {error}"
                )));
            }
            Pending::Listing | Pending::Report => {
                log::warn!("{error}");
                let which = if matches!(pending, Pending::Listing) {
                    Pending::Listing
                } else {
                    Pending::Report
                };
                self.held_response_done(which, 0, &[]);
                return Action::Pause;
            }
        };
        log::warn!("{error}");
        let reply = self.auth.borrow_mut().fetch_failed(which, error, now_ms());
        self.answer(&reply)
    }

    fn answer(&mut self, reply: &Reply) -> Action {
        self.phase = Phase::Answered;
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
        Action::Pause
    }

    fn resume_after(&mut self, action: Action) {
        if let Action::Continue = action {
            let _ = hostcalls::resume_http_request();
        }
    }
}

enum CalloutTarget {
    Idp(String),
    Service,
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let status = callout_status(num_headers);
        // A filtered search answer is as large as MLflow's; everything else is small.
        let limit = match pending {
            Pending::Listing => self.auth.borrow().settings.max_body_bytes,
            _ => MAX_CALLOUT_BODY,
        };
        if body_size > limit {
            let error = format!("the policy service's answer is larger than {limit} bytes");
            if matches!(pending, Pending::Listing) {
                self.refuse_response(&Reply::unavailable(&error));
                return;
            }
            let action = self.failed(&pending, error);
            self.resume_after(action);
            return;
        }
        let body = callout_body(body_size);
        let now = now_ms();
        if matches!(pending, Pending::Listing | Pending::Report) {
            self.held_response_done(pending, status, &body);
            return;
        }
        let action = match pending {
            Pending::Decide(asked) => {
                let verdict = match &self.plan {
                    Some(plan) => {
                        self.authz
                            .borrow_mut()
                            .answered(&asked, &plan.access, status, &body, now)
                    }
                    None => Verdict::Deny(Reply::unavailable("the request lost its plan")),
                };
                self.act_on_verdict(verdict)
            }
            Pending::Listing | Pending::Report => Action::Pause,
            Pending::Renew(old) => {
                let auth = self.auth.clone();
                let (outcome, set_cookie) =
                    auth.borrow_mut().renewed(&old, status, &body, self, now);
                self.set_cookie = set_cookie;
                self.act_on(outcome)
            }
            Pending::Bearer(token, until) => {
                let outcome = self
                    .auth
                    .borrow_mut()
                    .bearer_checked(&token, until, status, &body, now);
                self.act_on(outcome)
            }
            Pending::Basic(key) => {
                let outcome = self
                    .auth
                    .borrow_mut()
                    .basic_checked(key, status, &body, now);
                self.act_on(outcome)
            }
            pending if status != 200 => {
                let what = if status == 0 {
                    "no answer (timeout or connection failure)".to_string()
                } else {
                    format!("status {status}")
                };
                self.failed(&pending, what)
            }
            Pending::Discovery => {
                let result = self.auth.borrow_mut().set_discovery(&body);
                match result {
                    Ok(()) => self.fetch(KeyFetch::Idp),
                    Err(e) => self.failed(&Pending::Discovery, e),
                }
            }
            Pending::Keys(which) => {
                let result = self.auth.borrow_mut().set_keys(which, &body, now);
                match result {
                    Ok(record) => {
                        if let Ok(bytes) = serde_json::to_vec(&record) {
                            let _ =
                                hostcalls::set_shared_data(shared_key(which), Some(&bytes), None);
                        }
                        self.run()
                    }
                    Err(e) => self.failed(&Pending::Keys(which), e),
                }
            }
        };
        self.resume_after(action);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.request_headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        self.method = self.get(":method").unwrap_or_default();
        self.path = self.get(":path").unwrap_or_default();
        self.request_ended = end_of_stream;
        self.run()
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.phase {
            Phase::Forwarded => return Action::Continue,
            Phase::Answered | Phase::HoldingResponse => return Action::Pause,
            Phase::Authenticating | Phase::WaitingBody | Phase::Deciding => {}
        }
        // Until the request is decided nothing goes on. While the headers are held
        // for a callout, Envoy keeps the body itself under flow control (an artifact
        // upload is never buffered here); only routes that read ids from the body
        // get here before their decision.
        let routed = self.routed();
        if !routed.reads_body() {
            return Action::Pause;
        }
        let limit = self.auth.borrow().settings.max_body_bytes;
        if body_size > limit {
            return self.answer(&Reply::too_large(&format!(
                "the request body is larger than the {limit} bytes the filter reads for {}",
                routed.name
            )));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.request_ended = true;
        self.body =
            hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .or(Some(Vec::new()));
        if self.phase == Phase::WaitingBody {
            self.now = now_ms();
            return self.authorize();
        }
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        if self.phase != Phase::Forwarded || !self.holds_response() {
            return Action::Continue;
        }
        let status: u32 = self
            .get_http_response_header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if !(200..300).contains(&status) {
            return Action::Continue;
        }
        self.phase = Phase::HoldingResponse;
        if end_of_stream {
            return self.on_held_response(Vec::new());
        }
        // The body will change length (filtering) or is read whole.
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
        // Headers go on (the proxy-wasm ABI turns a paused header phase into "stop
        // everything", and the body would never arrive); the body is what is held.
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::HoldingResponse || self.pending.is_some() {
            return if self.pending.is_some() {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        let limit = self.auth.borrow().settings.max_body_bytes;
        if body_size > limit {
            let filtering = matches!(self.plan.as_ref().map(|p| &p.after), Some(After::Filter(_)));
            if filtering {
                // Never pass rows that were not filtered.
                self.refuse_response(&Reply::unavailable(&format!(
                    "MLflow's answer is larger than the {limit} bytes the filter reads; ask for fewer results"
                )));
                return Action::Pause;
            }
            self.phase = Phase::Forwarded;
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpResponseBody,
            0,
            body_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        self.on_held_response(body)
    }
}
