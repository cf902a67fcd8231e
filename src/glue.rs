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
use crate::reply::Reply;
use crate::settings::{Settings, Target};
use crate::wire::{
    RenewRequest, BASIC_CHECK_PATH, BEARER_CHECK_PATH, SERVICE_KEY_ENV, SERVICE_KEY_HEADER,
    SESSION_KEYS_PATH, SESSION_RENEW_PATH,
};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const METRIC_PREFIX: &str = "mlflow_authz";
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
    /// Metric ids and the values already flushed.
    metrics: Vec<(u32, u64)>,
}

impl Context for Root {}

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
        self.metrics = auth
            .stats
            .fields()
            .iter()
            .filter_map(|(name, _)| {
                hostcalls::define_metric(MetricType::Counter, &format!("{METRIC_PREFIX}.{name}"))
                    .ok()
                    .map(|id| (id, 0))
            })
            .collect();
        self.auth = Some(Rc::new(RefCell::new(auth)));
        let _ = hostcalls::set_tick_period(Duration::from_secs(1));
        true
    }

    fn on_tick(&mut self) {
        let Some(auth) = &self.auth else { return };
        let Ok(mut auth) = auth.try_borrow_mut() else {
            return;
        };
        adopt_shared(&mut auth, KeyFetch::Idp);
        adopt_shared(&mut auth, KeyFetch::Session);
        // Counted in memory on the request path; flushed here, off it.
        for ((id, flushed), (_, value)) in self.metrics.iter_mut().zip(auth.stats.fields()) {
            if value > *flushed {
                let _ = hostcalls::increment_metric(*id, (value - *flushed) as i64);
                *flushed = value;
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let auth = self.auth.clone()?;
        Some(Box::new(Http {
            auth,
            pending: None,
            set_cookie: None,
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
}

struct Http {
    auth: Rc<RefCell<Authenticator>>,
    pending: Option<Pending>,
    /// A renewed session cookie to hand to the browser with the response.
    set_cookie: Option<String>,
}

impl Headers for Http {
    fn get(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
}

impl Http {
    /// Authenticates and acts on the outcome; `Continue` means forward now.
    fn run(&mut self) -> Action {
        let auth = self.auth.clone();
        // Each round either ends the request or waits for a callout; adopting
        // another VM's keys is the only reason to go round again.
        for _ in 0..3 {
            let outcome = auth.borrow_mut().authenticate(self, now_ms());
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
                Action::Continue
            }
            Outcome::Public => {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, header, None);
                Action::Continue
            }
            Outcome::Deny(reply) => self.answer(&reply),
            _ => self.answer(&Reply::unavailable(
                "the policy service gave no usable answer",
            )),
        }
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
        };
        log::warn!("{error}");
        let reply = self.auth.borrow_mut().fetch_failed(which, error, now_ms());
        self.answer(&reply)
    }

    fn answer(&mut self, reply: &Reply) -> Action {
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
        // No headers: the callout timed out or the connection failed.
        let status: u32 = if num_headers == 0 {
            0
        } else {
            self.get_http_call_response_header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let body = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_CALLOUT_BODY),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let now = now_ms();
        let action = match pending {
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
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.run()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        Action::Continue
    }
}
