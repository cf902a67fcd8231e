//! Response helpers: typed errors for the JSON API and the browser pages,
//! minimal HTML, and the session cookie header.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mlflow_edge_authz::wire::ErrorBody;

use crate::sessions::SessionStoreError;
use crate::settings::Settings;
use crate::store::StoreError;

/// An error of the JSON API, in MLflow's error shape.
#[derive(Debug)]
pub enum ApiError {
    /// 401 `UNAUTHENTICATED`.
    Unauthenticated(String),
    /// 400 `INVALID_PARAMETER_VALUE`.
    BadRequest(String),
    /// 403 `PERMISSION_DENIED`.
    Forbidden(String),
    /// 404 `RESOURCE_DOES_NOT_EXIST`.
    NotFound(String),
    /// 409 `RESOURCE_ALREADY_EXISTS`.
    Conflict(String),
    /// 422 `INVALID_PARAMETER_VALUE`: a body that does not say what the route needs
    /// (the management API's answer to bad bodies, as the system we replace gives).
    Unprocessable(String),
    /// 500; the detail goes to the log only.
    Internal(String),
    /// 503 `TEMPORARILY_UNAVAILABLE`: something the answer needs is down.
    Unavailable(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

impl From<SessionStoreError> for ApiError {
    fn from(err: SessionStoreError) -> Self {
        match err {
            SessionStoreError::Store(e) => ApiError::from(e),
            SessionStoreError::Unavailable { backend, .. } => {
                tracing::error!("{err}");
                ApiError::Unavailable(format!(
                    "the session store (SESSION_TYPE={backend}) is unavailable; try again shortly"
                ))
            }
        }
    }
}

impl From<SessionStoreError> for PageError {
    fn from(err: SessionStoreError) -> Self {
        match err {
            SessionStoreError::Store(e) => PageError::from(e),
            SessionStoreError::Unavailable { backend, .. } => {
                tracing::error!("{err}");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in failed",
                    format!(
                        "The session store (SESSION_TYPE={backend}) is unavailable, so no \
                         session can be started. Please try again shortly."
                    ),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthenticated(message) => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new("UNAUTHENTICATED", message),
            ),
            ApiError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new("INVALID_PARAMETER_VALUE", message),
            ),
            ApiError::Forbidden(message) => (
                StatusCode::FORBIDDEN,
                ErrorBody::new("PERMISSION_DENIED", message),
            ),
            ApiError::NotFound(message) => (
                StatusCode::NOT_FOUND,
                ErrorBody::new("RESOURCE_DOES_NOT_EXIST", message),
            ),
            ApiError::Conflict(message) => (
                StatusCode::CONFLICT,
                ErrorBody::new("RESOURCE_ALREADY_EXISTS", message),
            ),
            ApiError::Unprocessable(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody::new("INVALID_PARAMETER_VALUE", message),
            ),
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new("TEMPORARILY_UNAVAILABLE", message),
            ),
            ApiError::Internal(detail) => {
                tracing::error!("internal error: {detail}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::new(
                        "INTERNAL_ERROR",
                        "the policy service failed; its log has the details",
                    ),
                )
            }
        };
        json_response(status, body.to_json())
    }
}

pub fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error shown to a browser as a small HTML page.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    /// A link to offer (href, text), e.g. to start signing in again.
    pub link: Option<(String, String)>,
}

impl PageError {
    pub fn new(status: StatusCode, title: &str, message: impl Into<String>) -> Self {
        PageError {
            status,
            title: title.into(),
            message: message.into(),
            link: None,
        }
    }

    pub fn with_link(mut self, href: &str, text: &str) -> Self {
        self.link = Some((href.into(), text.into()));
        self
    }
}

impl From<StoreError> for PageError {
    fn from(err: StoreError) -> Self {
        tracing::error!("internal error: {err}");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in failed",
            "The sign-in service failed; its log has the details.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let link = self
            .link
            .map(|(href, text)| {
                format!(
                    "<p><a href=\"{}\">{}</a></p>",
                    escape_html(&href),
                    escape_html(&text)
                )
            })
            .unwrap_or_default();
        let body = page(
            &self.title,
            &format!("<p>{}</p>{link}", escape_html(&self.message)),
        );
        (
            self.status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A self-contained page; `title` is escaped, `body_html` must already be.
pub fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;\
         padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}</style></head>\
         <body><h1>{title}</h1>{body_html}</body></html>\n",
        title = escape_html(title),
    )
}

/// `Set-Cookie` for the session cookie; `value` empty and `max_age` `Some(0)`
/// clears it; `None` is a browser-session cookie (no `Max-Age`).
pub fn session_cookie(settings: &Settings, value: &str, max_age: Option<u64>) -> String {
    let mut cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite={}",
        settings.session_cookie_name, value, settings.session_cookie_samesite
    );
    if let Some(max_age) = max_age {
        cookie.push_str(&format!("; Max-Age={max_age}"));
    }
    if settings.session_cookie_secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// The cookie's `Max-Age` for a session with `remaining` seconds to live: that,
/// with `SESSION_PERMANENT=true`; none (the browser drops the cookie when it
/// closes) otherwise. Either way the server-side session ends on time.
pub fn cookie_max_age(settings: &Settings, remaining: u64) -> Option<u64> {
    settings.session_permanent.then_some(remaining)
}

/// The value of the cookie `name` from the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// A 302 to `location`, with optional `Set-Cookie`.
pub fn redirect(location: &str, set_cookie: Option<String>) -> Response {
    let mut headers = HeaderMap::new();
    match HeaderValue::from_str(location) {
        Ok(value) => {
            headers.insert(header::LOCATION, value);
        }
        Err(_) => {
            headers.insert(header::LOCATION, HeaderValue::from_static("/"));
        }
    }
    if let Some(cookie) = set_cookie {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.insert(header::SET_COOKIE, value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::FOUND, headers).into_response()
}

/// Keeps `next` only when it is a same-origin relative path; otherwise `/`.
/// Non-ASCII characters and spaces are percent-encoded; control characters
/// (which browsers strip, turning `/\t/evil` into `//evil`) refuse it.
pub fn sanitize_next(next: Option<&str>) -> String {
    let Some(next) = next else {
        return "/".into();
    };
    if !next.starts_with('/')
        || next.starts_with("//")
        || next.contains('\\')
        || next.len() > 2048
        || next.chars().any(char::is_control)
    {
        return "/".into();
    }
    let mut out = String::with_capacity(next.len());
    for c in next.chars() {
        if c.is_ascii_graphic() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The opt-in paging of collection GETs, as upstream's: `limit` (1 to 500), `offset`
/// and `search` (a case-insensitive substring of each row's name). Rows are
/// filtered first, then paged; the answer's `X-Total-Count` says how many matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paging {
    pub limit: Option<usize>,
    pub offset: usize,
    pub search: String,
}

pub const MAX_PAGE: usize = 500;

impl Paging {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut paging = Paging::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => paging.limit = Some(n),
                    _ => {
                        return Err(ApiError::Unprocessable(format!(
                            "limit must be a whole number from 1 to {MAX_PAGE}, not {value:?}"
                        )))
                    }
                },
                "offset" => {
                    paging.offset = value.parse::<usize>().map_err(|_| {
                        ApiError::Unprocessable(format!(
                            "offset must be a whole number from 0, not {value:?}"
                        ))
                    })?
                }
                "search" => paging.search = value.trim().to_lowercase(),
                _ => {}
            }
        }
        Ok(paging)
    }

    /// Whether a row named `name` passes `search`.
    pub fn matches(&self, name: &str) -> bool {
        self.search.is_empty() || name.to_lowercase().contains(&self.search)
    }

    /// `rows` filtered by `search` on `name`, then the page; with the match count.
    pub fn apply<T>(&self, rows: Vec<T>, name: impl Fn(&T) -> &str) -> (Vec<T>, usize) {
        let matching: Vec<T> = rows.into_iter().filter(|r| self.matches(name(r))).collect();
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        (page, total)
    }
}

/// A JSON answer with the `X-Total-Count` header of a paged collection.
pub fn paged_json(body: serde_json::Value, total: usize) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::HeaderName::from_static("x-total-count"),
                total.to_string(),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_same_origin() {
        for (input, expected) in [
            (None, "/"),
            (Some(""), "/"),
            (Some("//evil.com"), "/"),
            (Some("///evil.com"), "/"),
            (Some("https://evil"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some("/\\evil"), "/"),
            (Some("/\t/evil.com"), "/"),
            (Some("/\n/evil.com"), "/"),
            (Some("evil.com/x"), "/"),
            (Some("/ok?x=1"), "/ok?x=1"),
            (Some("/#/experiments/1"), "/#/experiments/1"),
            (Some("/a b/é"), "/a%20b/%C3%A9"),
        ] {
            assert_eq!(sanitize_next(input), expected, "{input:?}");
        }
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape_html("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn reads_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; mlflow_session=tok"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie_value(&headers, "mlflow_session"), Some("tok"));
        assert_eq!(cookie_value(&headers, "b"), Some("2"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }
}
