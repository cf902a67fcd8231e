//! Filtering MLflow search and list answers down to the rows a user may read
//! ([`LISTING_PATH`](mlflow_edge_authz::wire::LISTING_PATH)), with top-up paging as
//! the system we replace does it (`hooks/after_request.py`, `_top_up_page`).
//!
//! After unreadable rows are dropped, further pages of the same MLflow search are
//! fetched until the page holds `max_results` rows or MLflow has no more; the
//! answer's `next_page_token` then continues right after the last row examined that
//! made it into the page (or after every examined row, when the page could not be
//! filled), so paging with the returned tokens neither skips nor repeats a readable
//! row. The work per call is bounded ([`MAX_FETCHES`], [`MAX_EXAMINED`]).
//!
//! MLflow 3.17 facts this relies on (checked against `mlflow server` and its source):
//! - experiments, registered models and model versions use `SearchUtils` offset
//!   tokens: standard base64 (padded) of the JSON `{"offset": N}`; MLflow refuses an
//!   offset of 0 (`parse_start_offset_from_page_token`);
//! - logged models use `SearchLoggedModelsPaginationToken`: standard base64 of the
//!   JSON `{"experiment_ids": [...], "filter_string": ..., "order_by": ..., "offset": N}`,
//!   whose first three fields must match the request;
//! - MLflow omits empty fields: no rows key on an empty page, no `next_page_token`
//!   on the last page.
//!
//! Permissions and further pages come through two small traits, [`Readable`] and
//! [`Pages`], so the logic here is pure and tested with fakes.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use mlflow_edge_authz::permission::ResourceKind;
use mlflow_edge_authz::wire::{Listing, ListingRequest};
use serde_json::{Map, Value};

/// At most this many further pages are fetched from MLflow per call.
pub const MAX_FETCHES: usize = 50;
/// No further page is fetched once this many rows have been examined in a call
/// (further pages are sized so that they stay within it).
pub const MAX_EXAMINED: usize = 20_000;
/// The largest page asked of MLflow when topping up.
pub const FETCH_PAGE_MAX: u64 = 1000;

/// The tag marking a registered model (and each of its versions) as a prompt.
pub const IS_PROMPT_TAG: &str = "mlflow.prompt.is_prompt";

/// What a listed row is judged as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListedKind {
    /// By experiment id: experiments, logged models, artifact-root entries.
    Experiment,
    /// By registered model name: registered models and model versions.
    RegisteredModel,
    /// By registered model name, for one tagged `mlflow.prompt.is_prompt=true`:
    /// the resolver uses prompt patterns.
    Prompt,
}

impl ListedKind {
    const ALL: [ListedKind; 3] = [
        ListedKind::Experiment,
        ListedKind::RegisteredModel,
        ListedKind::Prompt,
    ];

    pub fn resource_kind(self) -> ResourceKind {
        match self {
            ListedKind::Experiment => ResourceKind::Experiment,
            ListedKind::RegisteredModel => ResourceKind::RegisteredModel,
            ListedKind::Prompt => ResourceKind::Prompt,
        }
    }
}

/// Why a listing could not be filtered. Never answered with the unfiltered rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// MLflow's answer, or a further page of it, is not what the route returns.
    #[error("malformed MLflow answer: {0}")]
    MalformedAnswer(String),
    /// The client's request as forwarded (query, body, `max_results`) cannot be read.
    #[error("malformed listing request: {0}")]
    MalformedRequest(String),
    /// A page token (the client's or MLflow's) cannot be read or continued.
    #[error("malformed page token: {0}")]
    MalformedToken(String),
    /// Fetching a further page from MLflow failed.
    #[error("fetching a further page from MLflow failed: {0}")]
    Upstream(String),
    /// Looking up the user's permissions failed.
    #[error("permission lookup failed: {0}")]
    Permissions(String),
}

/// What the user may read, in bulk: one answer per id, in order.
pub trait Readable {
    fn readable(
        &self,
        kind: ListedKind,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<bool>, ListingError>> + Send;
}

/// Fetches another page of the same MLflow search (same method and path, the
/// query or JSON body changed only in `page_token` and `max_results`). Answers
/// MLflow's JSON body; a non-2xx answer should be an error.
pub trait Pages {
    fn fetch(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<&str>,
    ) -> impl Future<Output = Result<Value, ListingError>> + Send;
}

/// Filters MLflow's answer in `req` to what `readable` allows, topping the page up
/// through `pages`. Answers the new response body (MLflow's own, verbatim, when
/// every row is readable).
pub async fn filter_listing(
    req: &ListingRequest,
    readable: &impl Readable,
    pages: &impl Pages,
) -> Result<String, ListingError> {
    if req.listing == Listing::GraphqlModelVersions {
        return filter_graphql_model_versions(req, readable).await;
    }
    match route(req.listing) {
        Some(route) => filter_search(route, req, readable, pages).await,
        None => filter_artifact_root(req, readable).await,
    }
}

// ---------------------------------------------------------------------------
// Routes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenFormat {
    /// `SearchUtils.create_page_token`: base64 of `{"offset": N}`.
    Offset,
    /// `SearchLoggedModelsPaginationToken`.
    LoggedModels,
}

type RowKey = (ListedKind, String);

#[derive(Clone, Copy)]
struct Route {
    /// For messages.
    name: &'static str,
    rows_key: &'static str,
    /// MLflow's `max_results` when the request has none.
    default_max_results: u64,
    /// The largest `max_results` MLflow accepts on the route.
    max_results_limit: u64,
    tokens: TokenFormat,
    row_key: fn(&Value) -> Result<RowKey, String>,
}

fn route(listing: Listing) -> Option<Route> {
    Some(match listing {
        // `SEARCH_MAX_RESULTS_DEFAULT` / `SEARCH_MAX_RESULTS_THRESHOLD`
        // (mlflow.store.tracking); the REST route itself refuses a missing value.
        Listing::Experiments => Route {
            name: "SearchExperiments",
            rows_key: "experiments",
            default_max_results: 1000,
            max_results_limit: 50_000,
            tokens: TokenFormat::Offset,
            row_key: experiment_row,
        },
        // Proto default 100; handler and store refuse more than 1000.
        Listing::RegisteredModels => Route {
            name: "SearchRegisteredModels",
            rows_key: "registered_models",
            default_max_results: 100,
            max_results_limit: 1000,
            tokens: TokenFormat::Offset,
            row_key: registered_model_row,
        },
        // Proto default 200000 (the handler passes it to the store), also the maximum.
        Listing::ModelVersions => Route {
            name: "SearchModelVersions",
            rows_key: "model_versions",
            default_max_results: 200_000,
            max_results_limit: 200_000,
            tokens: TokenFormat::Offset,
            row_key: model_version_row,
        },
        // Proto default 50 (`max_results or None` then the store's 100 never applies
        // through REST); no maximum.
        Listing::LoggedModels => Route {
            name: "SearchLoggedModels",
            rows_key: "models",
            default_max_results: 50,
            max_results_limit: u64::MAX,
            tokens: TokenFormat::LoggedModels,
            row_key: logged_model_row,
        },
        Listing::ArtifactRoot | Listing::GraphqlModelVersions => return None,
    })
}

fn string_field<'a>(row: &'a Value, field: &str) -> Result<&'a str, String> {
    match row.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(Value::String(_)) => Err(format!("empty `{field}`")),
        Some(_) => Err(format!("`{field}` is not a string")),
        None => Err(format!("no `{field}`")),
    }
}

fn experiment_row(row: &Value) -> Result<RowKey, String> {
    Ok((
        ListedKind::Experiment,
        string_field(row, "experiment_id")?.to_owned(),
    ))
}

/// As MLflow's `_is_prompt`: tags collapse by key, the last value winning, and only
/// a value of `true` (any case) marks a prompt.
fn is_prompt(row: &Value) -> Result<bool, String> {
    let tags = match row.get("tags") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(tags)) => tags,
        Some(_) => return Err("`tags` is not an array".into()),
    };
    let mut prompt = false;
    for tag in tags {
        if tag.get("key").and_then(Value::as_str) == Some(IS_PROMPT_TAG) {
            prompt = tag
                .get("value")
                .and_then(Value::as_str)
                .is_some_and(|value| value.eq_ignore_ascii_case("true"));
        }
    }
    Ok(prompt)
}

fn registered_model_row(row: &Value) -> Result<RowKey, String> {
    let name = string_field(row, "name")?.to_owned();
    let kind = if is_prompt(row)? {
        ListedKind::Prompt
    } else {
        ListedKind::RegisteredModel
    };
    Ok((kind, name))
}

/// A version is judged by its registered model; MLflow tags every prompt version
/// `mlflow.prompt.is_prompt=true` as it tags the prompt.
fn model_version_row(row: &Value) -> Result<RowKey, String> {
    registered_model_row(row)
}

fn logged_model_row(row: &Value) -> Result<RowKey, String> {
    let info = row.get("info").ok_or("no `info`")?;
    let id = string_field(info, "experiment_id").map_err(|err| format!("info: {err}"))?;
    Ok((ListedKind::Experiment, id.to_owned()))
}

// ---------------------------------------------------------------------------
// Permissions, in bulk, remembered for the call

struct Verdicts<'r, R> {
    readable: &'r R,
    known: HashMap<RowKey, bool>,
}

impl<'r, R: Readable> Verdicts<'r, R> {
    fn new(readable: &'r R) -> Self {
        Verdicts {
            readable,
            known: HashMap::new(),
        }
    }

    /// One verdict per key; asks `readable` once per kind about the keys not yet known.
    async fn of(&mut self, keys: &[RowKey]) -> Result<Vec<bool>, ListingError> {
        for kind in ListedKind::ALL {
            let mut ids: Vec<String> = Vec::new();
            let mut asked: HashSet<&str> = HashSet::new();
            for (key_kind, id) in keys {
                if *key_kind == kind
                    && !self.known.contains_key(&(kind, id.clone()))
                    && asked.insert(id.as_str())
                {
                    ids.push(id.clone());
                }
            }
            if ids.is_empty() {
                continue;
            }
            let answers = self.readable.readable(kind, &ids).await?;
            if answers.len() != ids.len() {
                return Err(ListingError::Permissions(format!(
                    "asked about {} {}s, got {} answers",
                    ids.len(),
                    kind.resource_kind().as_str(),
                    answers.len()
                )));
            }
            for (id, answer) in ids.into_iter().zip(answers) {
                self.known.insert((kind, id), answer);
            }
        }
        keys.iter()
            .map(|key| {
                self.known.get(key).copied().ok_or_else(|| {
                    ListingError::Permissions(format!(
                        "no answer for {} {}",
                        key.0.resource_kind().as_str(),
                        key.1
                    ))
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Searches with top-up paging

/// Where the client's search parameters travel.
enum Carrier {
    /// GET (and HEAD): the query string.
    Query,
    /// POST: a JSON object body.
    Body(Map<String, Value>),
}

struct Search<'a> {
    req: &'a ListingRequest,
    carrier: Carrier,
    max_results: u64,
    page_token: Option<String>,
}

/// Decoded query pairs, `+` and percent escapes undone, as Flask reads them.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String, &str)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = url::form_urlencoded::parse(piece.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            (key, value, piece)
        })
}

fn parse_max_results(route: &Route, value: Option<&Value>) -> Result<u64, ListingError> {
    let bad = |shown: &dyn std::fmt::Display| {
        ListingError::MalformedRequest(format!(
            "{}: max_results {shown} is not a positive integer",
            route.name
        ))
    };
    let number = match value {
        None | Some(Value::Null) => return Ok(route.default_max_results),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(n))?,
        Some(Value::String(text)) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| bad(&format!("{text:?}")))?,
        Some(other) => return Err(bad(other)),
    };
    match u64::try_from(number) {
        Ok(n) if n > 0 => Ok(n),
        // `max_results or None`: MLflow applies its default.
        _ if number == 0 && route.tokens == TokenFormat::LoggedModels => {
            Ok(route.default_max_results)
        }
        _ => Err(bad(&number)),
    }
}

impl<'a> Search<'a> {
    fn parse(route: &Route, req: &'a ListingRequest) -> Result<Self, ListingError> {
        if req.method.eq_ignore_ascii_case("POST") {
            let body = req.request_body.as_deref().unwrap_or("").trim();
            let object = if body.is_empty() {
                Map::new()
            } else {
                match serde_json::from_str::<Value>(body) {
                    Ok(Value::Object(object)) => object,
                    Ok(_) => {
                        return Err(ListingError::MalformedRequest(format!(
                            "{}: the request body is not a JSON object",
                            route.name
                        )))
                    }
                    Err(err) => {
                        return Err(ListingError::MalformedRequest(format!(
                            "{}: the request body is not JSON: {err}",
                            route.name
                        )))
                    }
                }
            };
            let max_results = parse_max_results(route, object.get("max_results"))?;
            let page_token = match object.get("page_token") {
                None | Some(Value::Null) => None,
                Some(Value::String(token)) => Some(token.clone()).filter(|t| !t.is_empty()),
                Some(_) => {
                    return Err(ListingError::MalformedRequest(format!(
                        "{}: page_token in the request body is not a string",
                        route.name
                    )))
                }
            };
            Ok(Search {
                req,
                carrier: Carrier::Body(object),
                max_results,
                page_token,
            })
        } else {
            let mut max_results = None;
            let mut page_token = None;
            for (key, value, _) in query_pairs(&req.query) {
                if key == "max_results" && max_results.is_none() {
                    max_results = Some(Value::String(value));
                } else if key == "page_token" && page_token.is_none() {
                    page_token = Some(value);
                }
            }
            Ok(Search {
                req,
                carrier: Carrier::Query,
                max_results: parse_max_results(route, max_results.as_ref())?,
                page_token: page_token.filter(|t| !t.is_empty()),
            })
        }
    }

    /// The same search, at `token`, `size` rows: method, query, body.
    fn at(&self, token: &str, size: u64) -> (&'a str, String, Option<String>) {
        match &self.carrier {
            Carrier::Query => {
                let mut query: Vec<String> = query_pairs(&self.req.query)
                    .filter(|(key, _, _)| key != "max_results" && key != "page_token")
                    .map(|(_, _, piece)| piece.to_owned())
                    .collect();
                query.push(
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("max_results", &size.to_string())
                        .append_pair("page_token", token)
                        .finish(),
                );
                // A HEAD answer has no body to read rows from.
                let method = if self.req.method.eq_ignore_ascii_case("HEAD") {
                    "GET"
                } else {
                    self.req.method.as_str()
                };
                (method, query.join("&"), self.req.request_body.clone())
            }
            Carrier::Body(object) => {
                let mut object = object.clone();
                object.insert("max_results".into(), Value::from(size));
                object.insert("page_token".into(), Value::from(token));
                (
                    self.req.method.as_str(),
                    self.req.query.clone(),
                    Some(Value::Object(object).to_string()),
                )
            }
        }
    }
}

/// One page of MLflow's answer: its rows and `next_page_token`.
struct Page {
    rows: Vec<Value>,
    next: Option<String>,
}

/// Takes the rows and the token out of an answer object, leaving its other fields.
fn take_page(
    route: &Route,
    answer: &mut Map<String, Value>,
    what: &str,
) -> Result<Page, ListingError> {
    if let Some(code) = answer.get("error_code") {
        return Err(ListingError::Upstream(format!(
            "{} {what} is an MLflow error ({code}): {}",
            route.name,
            answer.get("message").and_then(Value::as_str).unwrap_or("")
        )));
    }
    let rows = match answer.remove(route.rows_key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows,
        Some(_) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{} {what}: `{}` is not an array",
                route.name, route.rows_key
            )))
        }
    };
    let next = match answer.remove("next_page_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token).filter(|t| !t.is_empty()),
        Some(_) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{} {what}: `next_page_token` is not a string",
                route.name
            )))
        }
    };
    Ok(Page { rows, next })
}

fn row_keys(route: &Route, rows: &[Value], what: &str) -> Result<Vec<RowKey>, ListingError> {
    rows.iter()
        .enumerate()
        .map(|(index, row)| {
            (route.row_key)(row).map_err(|err| {
                ListingError::MalformedAnswer(format!(
                    "{} {what}: row {index} of `{}`: {err}",
                    route.name, route.rows_key
                ))
            })
        })
        .collect()
}

async fn filter_search(
    route: Route,
    req: &ListingRequest,
    readable: &impl Readable,
    pages: &impl Pages,
) -> Result<String, ListingError> {
    let search = Search::parse(&route, req)?;
    let mut answer = match serde_json::from_str::<Value>(&req.response_body) {
        Ok(Value::Object(answer)) => answer,
        Ok(_) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{} answer is not a JSON object",
                route.name
            )))
        }
        Err(err) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{} answer is not JSON: {err}",
                route.name
            )))
        }
    };
    let mut page = take_page(&route, &mut answer, "answer")?;
    let mut verdicts = Verdicts::new(readable);
    let mut page_verdicts = verdicts
        .of(&row_keys(&route, &page.rows, "answer")?)
        .await?;

    let max_results = usize::try_from(search.max_results).unwrap_or(usize::MAX);
    // Fast path: nothing to drop, nothing to top up.
    if page_verdicts.iter().all(|ok| *ok) && page.rows.len() <= max_results {
        return Ok(req.response_body.clone());
    }

    // The token the current page was fetched with (its first row's offset).
    let mut page_token = search.page_token.clone();
    let mut kept: Vec<Value> = Vec::new();
    let mut examined = 0usize;
    let mut fetches = 0usize;
    let mut last_size = 0u64;
    let next_token = loop {
        examined += page.rows.len();
        let rows_in_page = page.rows.len();
        let mut full_at = None;
        for (index, (row, ok)) in page.rows.into_iter().zip(&page_verdicts).enumerate() {
            if *ok {
                kept.push(row);
                if kept.len() >= max_results {
                    full_at = Some(index);
                    break;
                }
            }
        }
        if let Some(index) = full_at {
            if index + 1 == rows_in_page {
                break page.next;
            }
            // Rows of this page remain unexamined: continue right after the last taken.
            let start = page_offset(route.tokens, page_token.as_deref())?;
            let template = page_token.as_deref().or(page.next.as_deref());
            break Some(continuation(&route, template, start + index as u64 + 1)?);
        }
        let Some(next) = page.next else {
            break None;
        };
        if fetches >= MAX_FETCHES || examined >= MAX_EXAMINED {
            // Every row so far was examined: MLflow's token continues after them.
            break Some(next);
        }
        let size = search
            .max_results
            .max(last_size.saturating_mul(2))
            .min(FETCH_PAGE_MAX)
            .min(route.max_results_limit)
            .min((MAX_EXAMINED - examined) as u64)
            .max(1);
        let (method, query, body) = search.at(&next, size);
        fetches += 1;
        last_size = size;
        let what = format!("further page {fetches}");
        let mut fetched = match pages
            .fetch(method, &req.path, &query, body.as_deref())
            .await?
        {
            Value::Object(fetched) => fetched,
            _ => {
                return Err(ListingError::MalformedAnswer(format!(
                    "{} {what} is not a JSON object",
                    route.name
                )))
            }
        };
        page = take_page(&route, &mut fetched, &what)?;
        page_verdicts = verdicts.of(&row_keys(&route, &page.rows, &what)?).await?;
        page_token = Some(next);
    };

    if kept.is_empty() {
        answer.remove(route.rows_key);
    } else {
        answer.insert(route.rows_key.into(), Value::Array(kept));
    }
    if let Some(token) = next_token {
        answer.insert("next_page_token".into(), Value::String(token));
    }
    serde_json::to_string(&answer).map_err(|err| {
        ListingError::MalformedAnswer(format!("{} answer cannot be written: {err}", route.name))
    })
}

// ---------------------------------------------------------------------------
// Page tokens

/// The offset of the first row of the page fetched with `token`.
fn page_offset(format: TokenFormat, token: Option<&str>) -> Result<u64, ListingError> {
    let Some(token) = token else {
        return Ok(0);
    };
    let object = decode_token(token)?;
    match (format, object.get("offset")) {
        (TokenFormat::LoggedModels, None | Some(Value::Null)) => Some(0),
        (_, Some(Value::Number(n))) => n.as_u64(),
        (_, Some(Value::String(text))) => text.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ListingError::MalformedToken(format!("{token:?} holds no usable offset")))
}

/// A token for the same search starting at `offset`.
fn continuation(
    route: &Route,
    template: Option<&str>,
    offset: u64,
) -> Result<String, ListingError> {
    match route.tokens {
        TokenFormat::Offset => Ok(offset_token(offset)),
        TokenFormat::LoggedModels => {
            let template = template.ok_or_else(|| {
                ListingError::MalformedToken(format!(
                    "{}: no page token to continue from (MLflow answered more rows than asked \
                     for, without a next page)",
                    route.name
                ))
            })?;
            let mut object = decode_token(template)?;
            object.insert("offset".into(), Value::from(offset));
            Ok(base64_encode(Value::Object(object).to_string().as_bytes()))
        }
    }
}

/// MLflow's `SearchUtils.create_page_token`, byte for byte (Python's `json.dumps`).
fn offset_token(offset: u64) -> String {
    base64_encode(format!("{{\"offset\": {offset}}}").as_bytes())
}

fn decode_token(token: &str) -> Result<Map<String, Value>, ListingError> {
    let bytes = base64_decode(token)
        .ok_or_else(|| ListingError::MalformedToken(format!("{token:?} is not base64")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(ListingError::MalformedToken(format!(
            "{token:?} does not decode to a JSON object"
        ))),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard, padded base64 (Python's `base64.b64encode`).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let unpadded = text.trim_end_matches('=');
    if text.len() - unpadded.len() > 2 || unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in unpadded.bytes() {
        let v = B64.iter().position(|&b| b == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// The artifact root: one entry per experiment, no paging

/// `0`, `1`, `42`: how MLflow writes an experiment id (no sign, no leading zero).
fn canonical_experiment_id(path: &str) -> bool {
    !path.is_empty()
        && path.bytes().all(|b| b.is_ascii_digit())
        && (path == "0" || !path.starts_with('0'))
}

async fn filter_artifact_root(
    req: &ListingRequest,
    readable: &impl Readable,
) -> Result<String, ListingError> {
    const WHAT: &str = "ListArtifacts (artifact root)";
    let mut answer = match serde_json::from_str::<Value>(&req.response_body) {
        Ok(Value::Object(answer)) => answer,
        Ok(_) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{WHAT} answer is not a JSON object"
            )))
        }
        Err(err) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{WHAT} answer is not JSON: {err}"
            )))
        }
    };
    let files = match answer.remove("files") {
        None | Some(Value::Null) => return Ok(req.response_body.clone()),
        Some(Value::Array(files)) => files,
        Some(_) => {
            return Err(ListingError::MalformedAnswer(format!(
                "{WHAT}: `files` is not an array"
            )))
        }
    };
    let mut keys = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let path = string_field(file, "path").map_err(|err| {
            ListingError::MalformedAnswer(format!("{WHAT}: entry {index} of `files`: {err}"))
        })?;
        if canonical_experiment_id(path) {
            keys.push((ListedKind::Experiment, path.to_owned()));
        }
    }
    let mut verdicts = Verdicts::new(readable);
    let allowed = verdicts.of(&keys).await?;
    if keys.len() == files.len() && allowed.iter().all(|ok| *ok) {
        return Ok(req.response_body.clone());
    }
    let readable_ids: HashSet<&str> = keys
        .iter()
        .zip(&allowed)
        .filter(|(_, ok)| **ok)
        .map(|((_, id), _)| id.as_str())
        .collect();
    let kept: Vec<Value> = files
        .iter()
        .filter(|file| {
            file.get("path")
                .and_then(Value::as_str)
                .is_some_and(|path| readable_ids.contains(path))
        })
        .cloned()
        .collect();
    if !kept.is_empty() {
        answer.insert("files".into(), Value::Array(kept));
    }
    serde_json::to_string(&answer).map_err(|err| {
        ListingError::MalformedAnswer(format!("{WHAT} answer cannot be written: {err}"))
    })
}

// ---------------------------------------------------------------------------
// GraphQL answers: a run's model versions, no paging

/// The key of a run's model versions in a GraphQL answer. The filter refuses (to
/// non-admins) a query that renames the field or gives its name to another, and one
/// whose `modelVersions` does not select `name` as it is.
const GRAPHQL_MODEL_VERSIONS: &str = "modelVersions";

/// What the versions under `modelVersions` keys name: every registered model, and
/// whether some version names none (it is dropped).
fn graphql_version_names<'v>(value: &'v Value, names: &mut Vec<&'v str>, unnamed: &mut bool) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                if key == GRAPHQL_MODEL_VERSIONS {
                    if let Value::Array(versions) = inner {
                        for version in versions {
                            match version.get("name").and_then(Value::as_str) {
                                Some(name) if !name.is_empty() => names.push(name),
                                _ => *unnamed = true,
                            }
                        }
                    }
                }
                graphql_version_names(inner, names, unnamed);
            }
        }
        Value::Array(items) => {
            for item in items {
                graphql_version_names(item, names, unnamed);
            }
        }
        _ => {}
    }
}

/// Keeps, in every array under a `modelVersions` key, the versions whose `name` is
/// in `readable`.
fn retain_graphql_versions(value: &mut Value, readable: &HashSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                if key == GRAPHQL_MODEL_VERSIONS {
                    if let Value::Array(versions) = inner {
                        versions.retain(|version| {
                            version
                                .get("name")
                                .and_then(Value::as_str)
                                .is_some_and(|name| readable.contains(name))
                        });
                    }
                }
                retain_graphql_versions(inner, readable);
            }
        }
        Value::Array(items) => {
            for item in items {
                retain_graphql_versions(item, readable);
            }
        }
        _ => {}
    }
}

/// A `/graphql` answer (`{"data": ..., "errors": ...}`): in every array under a
/// `modelVersions` key, only the versions of registered models the user may read;
/// everything else as MLflow wrote it (verbatim when nothing is dropped).
///
/// A version is judged as a registered model: the answer cannot tell a prompt's
/// version, and MLflow leaves prompts out of a run's `modelVersions` (it searches
/// versions without the prompt tag).
async fn filter_graphql_model_versions(
    req: &ListingRequest,
    readable: &impl Readable,
) -> Result<String, ListingError> {
    const WHAT: &str = "GraphQL answer";
    let mut answer = serde_json::from_str::<Value>(&req.response_body)
        .map_err(|err| ListingError::MalformedAnswer(format!("{WHAT} is not JSON: {err}")))?;
    let mut names = Vec::new();
    let mut unnamed = false;
    graphql_version_names(&answer, &mut names, &mut unnamed);
    if names.is_empty() && !unnamed {
        return Ok(req.response_body.clone());
    }
    let keys: Vec<RowKey> = names
        .iter()
        .map(|name| (ListedKind::RegisteredModel, (*name).to_owned()))
        .collect();
    let allowed = Verdicts::new(readable).of(&keys).await?;
    if !unnamed && allowed.iter().all(|ok| *ok) {
        return Ok(req.response_body.clone());
    }
    let readable_names: HashSet<String> = keys
        .into_iter()
        .zip(allowed)
        .filter(|(_, ok)| *ok)
        .map(|((_, name), _)| name)
        .collect();
    retain_graphql_versions(&mut answer, &readable_names);
    serde_json::to_string(&answer)
        .map_err(|err| ListingError::MalformedAnswer(format!("{WHAT} cannot be written: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // ----- fakes ---------------------------------------------------------

    /// MLflow's offset paging over `rows`, written independently of the code
    /// under test (only the base64 codec is shared; it is checked against tokens
    /// taken from a real MLflow 3.17.2 server below).
    struct FakeMlflow {
        listing: Listing,
        rows: Vec<Value>,
        calls: Mutex<Vec<(String, String, Option<String>)>>,
    }

    fn rows_key(listing: Listing) -> &'static str {
        match listing {
            Listing::Experiments => "experiments",
            Listing::RegisteredModels => "registered_models",
            Listing::ModelVersions => "model_versions",
            Listing::LoggedModels => "models",
            Listing::ArtifactRoot => "files",
            Listing::GraphqlModelVersions => "modelVersions",
        }
    }

    impl FakeMlflow {
        fn new(listing: Listing, rows: Vec<Value>) -> Self {
            FakeMlflow {
                listing,
                rows,
                calls: Mutex::new(Vec::new()),
            }
        }

        fn fetches(&self) -> usize {
            self.calls.lock().unwrap().len()
        }

        /// What MLflow answers to the search.
        fn answer(&self, method: &str, query: &str, body: Option<&str>) -> Result<Value, String> {
            let params: Map<String, Value> = if method == "POST" {
                serde_json::from_str(body.unwrap_or("{}")).map_err(|e| e.to_string())?
            } else {
                let mut params = Map::new();
                for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                    params
                        .entry(k.into_owned())
                        .or_insert(Value::from(v.into_owned()));
                }
                params
            };
            let (default, limit) = match self.listing {
                Listing::Experiments => (None, 50_000),
                Listing::RegisteredModels => (Some(100), 1000),
                Listing::ModelVersions => (Some(200_000), 200_000),
                _ => (Some(50), u64::MAX),
            };
            let max = match params.get("max_results") {
                None => default.ok_or("Invalid value 0 for parameter 'max_results'")?,
                Some(Value::Number(n)) => n.as_u64().ok_or("bad max_results")?,
                Some(Value::String(s)) => s.parse::<u64>().map_err(|e| e.to_string())?,
                Some(_) => return Err("bad max_results".into()),
            };
            if max == 0 || max > limit {
                return Err(format!("max_results {max} out of range"));
            }
            let token = params
                .get("page_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty());
            let offset = match (self.listing, token) {
                (_, None) => 0,
                (Listing::LoggedModels, Some(token)) => {
                    let t: Value =
                        serde_json::from_slice(&base64_decode(token).ok_or("not base64")?)
                            .map_err(|e| e.to_string())?;
                    if t["experiment_ids"] != params["experiment_ids"]
                        || t["filter_string"]
                            != params.get("filter").cloned().unwrap_or(Value::Null)
                        || t["order_by"] != params.get("order_by").cloned().unwrap_or(Value::Null)
                    {
                        return Err(format!("page token {t} does not match the request"));
                    }
                    t["offset"].as_u64().unwrap_or(0)
                }
                (_, Some(token)) => {
                    let t: Value =
                        serde_json::from_slice(&base64_decode(token).ok_or("not base64")?)
                            .map_err(|e| e.to_string())?;
                    match t["offset"].as_u64() {
                        Some(n) if n > 0 => n,
                        _ => return Err(format!("Invalid page token, parsed value={t}")),
                    }
                }
            } as usize;
            let end = (offset + max as usize).min(self.rows.len());
            let mut answer = Map::new();
            let page = self.rows.get(offset..end).unwrap_or(&[]).to_vec();
            if !page.is_empty() {
                answer.insert(rows_key(self.listing).into(), Value::Array(page));
            }
            if end < self.rows.len() {
                let token = if self.listing == Listing::LoggedModels {
                    let t = serde_json::json!({
                        "experiment_ids": params["experiment_ids"],
                        "filter_string": params.get("filter").cloned().unwrap_or(Value::Null),
                        "order_by": params.get("order_by").cloned().unwrap_or(Value::Null),
                        "offset": end,
                    });
                    base64_encode(t.to_string().as_bytes())
                } else {
                    base64_encode(format!("{{\"offset\": {end}}}").as_bytes())
                };
                answer.insert("next_page_token".into(), Value::from(token));
            }
            Ok(Value::Object(answer))
        }
    }

    impl Pages for FakeMlflow {
        async fn fetch(
            &self,
            method: &str,
            path: &str,
            query: &str,
            body: Option<&str>,
        ) -> Result<Value, ListingError> {
            assert!(path.starts_with("/api/2.0/mlflow/"), "{path}");
            self.calls.lock().unwrap().push((
                method.to_owned(),
                query.to_owned(),
                body.map(str::to_owned),
            ));
            self.answer(method, query, body)
                .map_err(ListingError::Upstream)
        }
    }

    struct FakeReadable {
        allowed: HashSet<(ListedKind, String)>,
        calls: Mutex<Vec<(ListedKind, Vec<String>)>>,
    }

    impl FakeReadable {
        fn new(allowed: impl IntoIterator<Item = (ListedKind, String)>) -> Self {
            FakeReadable {
                allowed: allowed.into_iter().collect(),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn experiments(ids: impl IntoIterator<Item = String>) -> Self {
            Self::new(ids.into_iter().map(|id| (ListedKind::Experiment, id)))
        }
    }

    impl Readable for FakeReadable {
        async fn readable(
            &self,
            kind: ListedKind,
            ids: &[String],
        ) -> Result<Vec<bool>, ListingError> {
            self.calls.lock().unwrap().push((kind, ids.to_vec()));
            Ok(ids
                .iter()
                .map(|id| self.allowed.contains(&(kind, id.clone())))
                .collect())
        }
    }

    /// Answers a fixed list, whatever it is asked.
    struct FixedReadable(Vec<bool>);

    impl Readable for FixedReadable {
        async fn readable(&self, _: ListedKind, _: &[String]) -> Result<Vec<bool>, ListingError> {
            Ok(self.0.clone())
        }
    }

    /// Serves a fixed answer to every further page, counting them.
    struct FixedPages {
        answer: Value,
        fetches: Mutex<usize>,
    }

    fn fixed_pages(answer: Value) -> FixedPages {
        FixedPages {
            answer,
            fetches: Mutex::new(0),
        }
    }

    impl Pages for FixedPages {
        async fn fetch(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> Result<Value, ListingError> {
            *self.fetches.lock().unwrap() += 1;
            Ok(self.answer.clone())
        }
    }

    // ----- rows and clients ------------------------------------------------

    fn experiments(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                serde_json::json!({
                    "experiment_id": (i + 1).to_string(),
                    "name": format!("exp-{i}"),
                    "artifact_location": format!("mlflow-artifacts:/{}", i + 1),
                    "lifecycle_stage": "active",
                    "tags": [{"key": "team", "value": "a"}],
                })
            })
            .collect()
    }

    fn row_id(listing: Listing, row: &Value) -> String {
        match listing {
            Listing::Experiments => row["experiment_id"].as_str().unwrap().to_owned(),
            Listing::RegisteredModels => row["name"].as_str().unwrap().to_owned(),
            Listing::ModelVersions | Listing::GraphqlModelVersions => format!(
                "{}/{}",
                row["name"].as_str().unwrap(),
                row["version"].as_str().unwrap()
            ),
            Listing::LoggedModels => row["info"]["model_id"].as_str().unwrap().to_owned(),
            Listing::ArtifactRoot => row["path"].as_str().unwrap().to_owned(),
        }
    }

    fn path_of(listing: Listing) -> &'static str {
        match listing {
            Listing::Experiments => "/api/2.0/mlflow/experiments/search",
            Listing::RegisteredModels => "/api/2.0/mlflow/registered-models/search",
            Listing::ModelVersions => "/api/2.0/mlflow/model-versions/search",
            Listing::LoggedModels => "/api/2.0/mlflow/logged-models/search",
            Listing::ArtifactRoot => "/api/2.0/mlflow-artifacts/artifacts",
            Listing::GraphqlModelVersions => "/graphql",
        }
    }

    fn request(
        listing: Listing,
        method: &str,
        query: &str,
        body: Option<&str>,
        answer: &str,
    ) -> ListingRequest {
        ListingRequest {
            username: "alice".into(),
            listing,
            method: method.into(),
            path: path_of(listing).into(),
            query: query.into(),
            request_body: body.map(str::to_owned),
            response_body: answer.into(),
        }
    }

    /// One client call through MLflow then the filter: the filtered answer.
    async fn call(
        mlflow: &FakeMlflow,
        readable: &impl Readable,
        method: &str,
        query: &str,
        body: Option<&str>,
    ) -> Result<Value, ListingError> {
        let answer = mlflow.answer(method, query, body).unwrap().to_string();
        let req = request(mlflow.listing, method, query, body, &answer);
        let out = filter_listing(&req, readable, mlflow).await?;
        Ok(serde_json::from_str(&out).unwrap())
    }

    /// Pages through a search as a client does: the ids of each page.
    /// `base` holds the client's other parameters (query pairs or body fields).
    async fn page_through(
        mlflow: &FakeMlflow,
        readable: &impl Readable,
        method: &str,
        max_results: Option<u64>,
        base: Map<String, Value>,
    ) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let mut params = base.clone();
            if let Some(max) = max_results {
                params.insert("max_results".into(), Value::from(max));
            }
            if let Some(token) = &token {
                params.insert("page_token".into(), Value::from(token.clone()));
            }
            let answer = if method == "POST" {
                let body = Value::Object(params).to_string();
                call(mlflow, readable, method, "", Some(&body))
                    .await
                    .unwrap()
            } else {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &params {
                    match v {
                        Value::String(s) => query.append_pair(k, s),
                        other => query.append_pair(k, &other.to_string()),
                    };
                }
                call(mlflow, readable, method, &query.finish(), None)
                    .await
                    .unwrap()
            };
            let rows = answer
                .get(rows_key(mlflow.listing))
                .map(|rows| rows.as_array().unwrap().clone())
                .unwrap_or_default();
            pages.push(rows.iter().map(|row| row_id(mlflow.listing, row)).collect());
            match answer.get("next_page_token") {
                None => return pages,
                Some(t) => token = Some(t.as_str().unwrap().to_owned()),
            }
        }
        panic!("paging did not end");
    }

    fn assert_paged_exactly(pages: &[Vec<String>], expected: &[String], page_size: usize) {
        let all: Vec<String> = pages.concat();
        assert_eq!(all, expected, "every readable row once, in order");
        let (last, full) = pages.split_last().unwrap();
        for (i, page) in full.iter().enumerate() {
            assert_eq!(page.len(), page_size, "page {i} is full");
        }
        assert!(last.len() <= page_size);
    }

    #[test]
    fn filtering_can_run_in_a_spawned_task() {
        fn assert_send<T: Send>(_: &T) {}
        let req = request(Listing::Experiments, "GET", "", None, "{}");
        let (readable, mlflow) = (
            FakeReadable::experiments([]),
            FakeMlflow::new(Listing::Experiments, Vec::new()),
        );
        assert_send(&filter_listing(&req, &readable, &mlflow));
    }

    // ----- tokens ------------------------------------------------------------

    #[test]
    fn offset_tokens_match_real_mlflow_tokens() {
        // Taken from MLflow 3.17.2 answers (`SearchUtils.create_page_token`).
        assert_eq!(offset_token(2), "eyJvZmZzZXQiOiAyfQ==");
        assert_eq!(offset_token(3), "eyJvZmZzZXQiOiAzfQ==");
        assert_eq!(offset_token(4), "eyJvZmZzZXQiOiA0fQ==");
        assert_eq!(
            page_offset(TokenFormat::Offset, Some("eyJvZmZzZXQiOiAyfQ==")),
            Ok(2)
        );
        assert_eq!(
            page_offset(TokenFormat::Offset, Some("eyJvZmZzZXQiOiAyfQ")),
            Ok(2)
        );
        assert_eq!(page_offset(TokenFormat::Offset, None), Ok(0));
        for n in [1u64, 9, 10, 99, 12_345, 200_000] {
            assert_eq!(
                page_offset(TokenFormat::Offset, Some(&offset_token(n))),
                Ok(n)
            );
        }
        for len in 0..20u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(91).wrapping_add(3))
                .collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn logged_model_tokens_keep_the_search_and_move_the_offset() {
        // A real MLflow 3.17.2 SearchLoggedModels token.
        let real = "eyJleHBlcmltZW50X2lkcyI6IFsiMSIsICIyIiwgIjMiXSwgImZpbHRlcl9zdHJpbmciOiBudWxsLCAib3JkZXJfYnkiOiBudWxsLCAib2Zmc2V0IjogMn0=";
        assert_eq!(page_offset(TokenFormat::LoggedModels, Some(real)), Ok(2));
        let route = route(Listing::LoggedModels).unwrap();
        let moved = continuation(&route, Some(real), 7).unwrap();
        let decoded: Value = serde_json::from_slice(&base64_decode(&moved).unwrap()).unwrap();
        assert_eq!(
            decoded,
            serde_json::json!({"experiment_ids": ["1", "2", "3"], "filter_string": null, "order_by": null, "offset": 7})
        );
        assert!(matches!(
            continuation(&route, None, 7),
            Err(ListingError::MalformedToken(_))
        ));
    }

    // ----- experiments ---------------------------------------------------------

    #[tokio::test]
    async fn sparse_readable_experiments_page_through_exactly_once() {
        let mlflow = FakeMlflow::new(Listing::Experiments, experiments(2000));
        // 50 readable, spread evenly.
        let expected: Vec<String> = (0..50).map(|i| (i * 40 + 7).to_string()).collect();
        let readable = FakeReadable::experiments(expected.clone());
        let mut base = Map::new();
        base.insert("filter".into(), Value::from("name LIKE 'exp-%'"));
        base.insert("view_type".into(), Value::from("ACTIVE_ONLY"));
        for method in ["GET", "POST"] {
            let pages = page_through(&mlflow, &readable, method, Some(10), base.clone()).await;
            assert_paged_exactly(&pages, &expected, 10);
            assert_eq!(
                pages.len(),
                6,
                "{method}: five full pages, then an empty last one"
            );
        }
        // Every further page carried the client's other parameters and a bounded size.
        for (method, query, body) in mlflow.calls.lock().unwrap().iter() {
            let params: Map<String, Value> = if method == "POST" {
                serde_json::from_str(body.as_deref().unwrap()).unwrap()
            } else {
                url::form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
                    .collect()
            };
            assert_eq!(params["filter"], "name LIKE 'exp-%'");
            assert_eq!(params["view_type"], "ACTIVE_ONLY");
            let size = match &params["max_results"] {
                Value::String(s) => s.parse::<u64>().unwrap(),
                n => n.as_u64().unwrap(),
            };
            assert!((1..=FETCH_PAGE_MAX).contains(&size), "{size}");
        }
    }

    #[tokio::test]
    async fn clustered_and_irregular_readable_rows_are_neither_skipped_nor_repeated() {
        let mlflow = FakeMlflow::new(Listing::Experiments, experiments(2000));
        let mut positions: Vec<usize> = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1999, 1998];
        let mut x = 12_345usize;
        while positions.len() < 50 {
            x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
            let p = x % 2000;
            if !positions.contains(&p) {
                positions.push(p);
            }
        }
        positions.sort_unstable();
        let expected: Vec<String> = positions.iter().map(|p| (p + 1).to_string()).collect();
        let readable = FakeReadable::experiments(expected.clone());
        for size in [1, 3, 7, 10, 49, 50, 51, 1000] {
            let pages = page_through(&mlflow, &readable, "POST", Some(size), Map::new()).await;
            assert_paged_exactly(&pages, &expected, size as usize);
        }
    }

    #[tokio::test]
    async fn all_readable_passes_mlflow_answer_through_verbatim() {
        let mlflow = FakeMlflow::new(Listing::Experiments, experiments(30));
        let readable = FakeReadable::experiments((1..=30).map(|i| i.to_string()));
        let answer = mlflow
            .answer("GET", "max_results=10", None)
            .unwrap()
            .to_string();
        let req = request(Listing::Experiments, "GET", "max_results=10", None, &answer);
        assert_eq!(
            filter_listing(&req, &readable, &mlflow).await.unwrap(),
            answer
        );
        assert_eq!(mlflow.fetches(), 0);
        assert_eq!(readable.calls.lock().unwrap().len(), 1, "one bulk lookup");
    }

    #[tokio::test]
    async fn none_readable_is_an_empty_page_without_token_keeping_other_fields() {
        let mlflow = FakeMlflow::new(Listing::Experiments, experiments(2000));
        let readable = FakeReadable::experiments([]);
        let mut answer = mlflow.answer("GET", "max_results=10", None).unwrap();
        answer["some_future_field"] = serde_json::json!({"kept": [1, 2]});
        let req = request(
            Listing::Experiments,
            "GET",
            "max_results=10",
            None,
            &answer.to_string(),
        );
        let out: Value =
            serde_json::from_str(&filter_listing(&req, &readable, &mlflow).await.unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"some_future_field": {"kept": [1, 2]}})
        );
        assert!(mlflow.fetches() <= MAX_FETCHES);
    }

    #[tokio::test]
    async fn kept_rows_are_untouched() {
        let mut rows = experiments(5);
        rows[3]["tags"] = serde_json::json!([{"key": "k", "value": "ünïcødé \"q\""}]);
        rows[3]["last_update_time"] = Value::from(1_795_897_588_435u64);
        let mlflow = FakeMlflow::new(Listing::Experiments, rows.clone());
        let readable = FakeReadable::experiments(["2".to_owned(), "4".to_owned()]);
        let out = call(&mlflow, &readable, "GET", "max_results=10", None)
            .await
            .unwrap();
        assert_eq!(out, serde_json::json!({"experiments": [rows[1], rows[3]]}));
    }

    #[tokio::test]
    async fn work_is_bounded_and_the_token_continues_after_the_last_examined_row() {
        let mut rows = experiments(100_000);
        rows[60_000]["name"] = Value::from("the one");
        let mlflow = FakeMlflow::new(Listing::Experiments, rows);
        let readable = FakeReadable::experiments(["60001".to_owned()]);
        let first = call(&mlflow, &readable, "GET", "max_results=5", None)
            .await
            .unwrap();
        assert!(first.get("experiments").is_none());
        let token = first["next_page_token"].as_str().unwrap();
        let offset = page_offset(TokenFormat::Offset, Some(token)).unwrap() as usize;
        assert!((5..=MAX_EXAMINED).contains(&offset), "{offset}");
        assert!(mlflow.fetches() <= MAX_FETCHES);
        let pages = page_through(&mlflow, &readable, "GET", Some(5), Map::new()).await;
        assert_eq!(pages.concat(), vec!["60001".to_owned()]);
        assert!(pages.len() > 2, "took several bounded calls");
    }

    #[tokio::test]
    async fn absent_max_results_uses_mlflow_default() {
        // SearchExperiments: SEARCH_MAX_RESULTS_DEFAULT = 1000.
        let mlflow = FakeMlflow::new(Listing::Experiments, experiments(3000));
        let readable =
            FakeReadable::experiments((1..=3000).filter(|i| i % 2 == 0).map(|i| i.to_string()));
        let answer = serde_json::json!({"experiments": experiments(3000)[..1000], "next_page_token": offset_token(1000)});
        let req = request(
            Listing::Experiments,
            "POST",
            "",
            Some("{}"),
            &answer.to_string(),
        );
        let out: Value =
            serde_json::from_str(&filter_listing(&req, &readable, &mlflow).await.unwrap()).unwrap();
        assert_eq!(out["experiments"].as_array().unwrap().len(), 1000);
        assert_eq!(out["next_page_token"], offset_token(2000));
    }

    // ----- registered models, prompts, model versions ---------------------------

    fn registered_model(name: &str, tags: Value) -> Value {
        serde_json::json!({
            "name": name,
            "creation_timestamp": 1,
            "latest_versions": [{"name": name, "version": "1"}],
            "tags": tags,
        })
    }

    #[tokio::test]
    async fn registered_models_are_judged_as_models_or_prompts_by_their_tags() {
        let prompt_tag = |value: &str| serde_json::json!([{"key": IS_PROMPT_TAG, "value": value}]);
        let rows = vec![
            registered_model("model-a", Value::Null),
            registered_model("prompt-b", prompt_tag("true")),
            registered_model("prompt-c", prompt_tag("TRUE")),
            registered_model("model-d", prompt_tag("false")),
            // Last value wins, as in MLflow.
            registered_model(
                "model-e",
                serde_json::json!([{"key": IS_PROMPT_TAG, "value": "true"}, {"key": IS_PROMPT_TAG, "value": "no"}]),
            ),
            registered_model(
                "model-f",
                serde_json::json!([{"key": "other", "value": "true"}]),
            ),
        ];
        let mut rows_without_null_tags = rows.clone();
        rows_without_null_tags[0]
            .as_object_mut()
            .unwrap()
            .remove("tags");
        let mlflow = FakeMlflow::new(Listing::RegisteredModels, rows_without_null_tags.clone());
        let readable = FakeReadable::new([
            (ListedKind::RegisteredModel, "model-a".to_owned()),
            (ListedKind::Prompt, "prompt-b".to_owned()),
            // Wrong kind: a prompt is never judged as a model.
            (ListedKind::RegisteredModel, "prompt-c".to_owned()),
            (ListedKind::RegisteredModel, "model-e".to_owned()),
        ]);
        let out = call(&mlflow, &readable, "GET", "", None).await.unwrap();
        let names: Vec<String> = out["registered_models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| row_id(Listing::RegisteredModels, r))
            .collect();
        assert_eq!(names, ["model-a", "prompt-b", "model-e"]);
        let calls = readable.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                (
                    ListedKind::RegisteredModel,
                    vec![
                        "model-a".into(),
                        "model-d".into(),
                        "model-e".into(),
                        "model-f".into()
                    ]
                ),
                (
                    ListedKind::Prompt,
                    vec!["prompt-b".into(), "prompt-c".into()]
                ),
            ]
        );
    }

    #[tokio::test]
    async fn registered_models_top_up_within_the_route_maximum() {
        let rows: Vec<Value> = (0..3000)
            .map(|i| registered_model(&format!("m{i:04}"), Value::Null))
            .collect();
        let expected: Vec<String> = (0..3000)
            .filter(|i| i % 7 == 3)
            .map(|i| format!("m{i:04}"))
            .collect();
        let mlflow = FakeMlflow::new(Listing::RegisteredModels, rows);
        let readable = FakeReadable::new(
            expected
                .iter()
                .map(|n| (ListedKind::RegisteredModel, n.clone())),
        );
        // No max_results: the proto default 100.
        let pages = page_through(&mlflow, &readable, "GET", None, Map::new()).await;
        assert_paged_exactly(&pages, &expected, 100);
        let pages = page_through(&mlflow, &readable, "GET", Some(1000), Map::new()).await;
        assert_paged_exactly(&pages, &expected, 1000);
    }

    #[tokio::test]
    async fn model_versions_are_judged_by_their_registered_model_once_per_name() {
        let mut rows = Vec::new();
        for model in ["alpha", "beta", "gamma"] {
            for version in 1..=30 {
                rows.push(serde_json::json!({"name": model, "version": version.to_string(), "status": "READY"}));
            }
        }
        rows.push(serde_json::json!({
            "name": "prompt-p", "version": "1",
            "tags": [{"key": IS_PROMPT_TAG, "value": "true"}, {"key": "mlflow.prompt.text", "value": "Hi"}]
        }));
        let mlflow = FakeMlflow::new(Listing::ModelVersions, rows);
        let readable = FakeReadable::new([
            (ListedKind::RegisteredModel, "beta".to_owned()),
            (ListedKind::Prompt, "prompt-p".to_owned()),
        ]);
        let mut expected: Vec<String> = (1..=30).map(|v| format!("beta/{v}")).collect();
        expected.push("prompt-p/1".into());
        let pages = page_through(&mlflow, &readable, "GET", Some(8), Map::new()).await;
        assert_paged_exactly(&pages, &expected, 8);
        // Each call asks about each name once (answers are remembered within a call).
        for (_, ids) in readable.calls.lock().unwrap().iter() {
            let unique: HashSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "{ids:?}");
        }
    }

    // ----- logged models ----------------------------------------------------------

    fn logged_models(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                serde_json::json!({
                    "info": {
                        "model_id": format!("m-{i:04}"),
                        "experiment_id": (i % 5 + 1).to_string(),
                        "name": format!("lm-{i}"),
                        "tags": [{"key": "mlflow.user", "value": "root"}],
                    },
                    "data": {},
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn logged_models_top_up_with_their_own_token_format() {
        let rows = logged_models(400);
        let expected: Vec<String> = rows
            .iter()
            .filter(|r| r["info"]["experiment_id"] == "3")
            .map(|r| row_id(Listing::LoggedModels, r))
            .collect();
        let mlflow = FakeMlflow::new(Listing::LoggedModels, rows);
        let readable = FakeReadable::experiments(["3".to_owned()]);
        let mut base = Map::new();
        base.insert(
            "experiment_ids".into(),
            serde_json::json!(["1", "2", "3", "4", "5"]),
        );
        base.insert("filter".into(), Value::from("name LIKE 'lm-%'"));
        base.insert(
            "order_by".into(),
            serde_json::json!([{"field_name": "creation_timestamp", "ascending": false}]),
        );
        for size in [Some(7), None] {
            let pages = page_through(&mlflow, &readable, "POST", size, base.clone()).await;
            assert_paged_exactly(&pages, &expected, size.unwrap_or(50) as usize);
        }

        // A page filled mid-way through a further page continues right after the
        // last row taken, in MLflow's logged-model token format.
        let body =
            serde_json::json!({"experiment_ids": ["1", "2", "3", "4", "5"], "max_results": 3})
                .to_string();
        let out = call(&mlflow, &readable, "POST", "", Some(&body))
            .await
            .unwrap();
        let ids: Vec<String> = out["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| row_id(Listing::LoggedModels, r))
            .collect();
        assert_eq!(ids, ["m-0002", "m-0007", "m-0012"]);
        let token: Value = serde_json::from_slice(
            &base64_decode(out["next_page_token"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            token,
            serde_json::json!({"experiment_ids": ["1", "2", "3", "4", "5"], "filter_string": null, "order_by": null, "offset": 13})
        );
    }

    // ----- artifact root ------------------------------------------------------------

    #[tokio::test]
    async fn artifact_root_keeps_readable_canonical_experiment_ids() {
        let files = |paths: &[&str]| -> Value {
            serde_json::json!({"files": paths.iter().map(|p| serde_json::json!({"path": p, "is_dir": true})).collect::<Vec<_>>()})
        };
        let readable = FakeReadable::experiments(["0", "1", "12", "7"].map(str::to_owned));
        let mlflow = FakeMlflow::new(Listing::ArtifactRoot, Vec::new());
        let answer = files(&["0", "1", "12", "007", "3", "models", "-1", "1.0", "7"]).to_string();
        let req = request(Listing::ArtifactRoot, "GET", "", None, &answer);
        let out: Value =
            serde_json::from_str(&filter_listing(&req, &readable, &mlflow).await.unwrap()).unwrap();
        assert_eq!(out, files(&["0", "1", "12", "7"]));
        assert_eq!(
            readable.calls.lock().unwrap().clone(),
            vec![(
                ListedKind::Experiment,
                ["0", "1", "12", "3", "7"].map(str::to_owned).to_vec()
            )]
        );
        assert_eq!(mlflow.fetches(), 0);

        // All readable: verbatim (MLflow pretty-prints this answer).
        let pretty = serde_json::to_string_pretty(&files(&["1", "12"])).unwrap();
        let req = request(Listing::ArtifactRoot, "GET", "", None, &pretty);
        assert_eq!(
            filter_listing(&req, &readable, &mlflow).await.unwrap(),
            pretty
        );
        // None readable: MLflow's empty listing.
        let req = request(
            Listing::ArtifactRoot,
            "GET",
            "",
            None,
            &files(&["3", "mlruns"]).to_string(),
        );
        assert_eq!(
            filter_listing(&req, &readable, &mlflow).await.unwrap(),
            "{}"
        );
        // An empty root.
        let req = request(Listing::ArtifactRoot, "GET", "", None, "{}");
        assert_eq!(
            filter_listing(&req, &readable, &mlflow).await.unwrap(),
            "{}"
        );
    }

    // ----- GraphQL answers -------------------------------------------------------------

    fn version(name: &str, number: &str) -> Value {
        serde_json::json!({"status": "READY", "version": number, "name": name, "source": format!("models:/m-{number}"), "__typename": "MlflowModelVersion"})
    }

    async fn graphql(answer: &Value, readable: &FakeReadable) -> Result<Value, ListingError> {
        let mlflow = FakeMlflow::new(Listing::GraphqlModelVersions, Vec::new());
        let body = serde_json::json!({"query": "query GetRun { ... }", "operationName": "GetRun"})
            .to_string();
        let req = request(
            Listing::GraphqlModelVersions,
            "POST",
            "",
            Some(&body),
            &answer.to_string(),
        );
        let out = filter_listing(&req, readable, &mlflow).await;
        assert_eq!(mlflow.fetches(), 0, "a graphql answer is never paged");
        out.map(|text| serde_json::from_str(&text).unwrap())
    }

    #[tokio::test]
    async fn graphql_model_versions_keep_readable_registered_models_only() {
        let readable = FakeReadable::new([(ListedKind::RegisteredModel, "mine".to_owned())]);
        // mlflowGetRun: one run, its versions of two models.
        let answer = serde_json::json!({
            "data": {"mlflowGetRun": {
                "apiError": null,
                "run": {
                    "info": {"runUuid": "r1", "experimentId": "1"},
                    "modelVersions": [version("mine", "1"), version("theirs", "1"), version("mine", "2")],
                    "data": {"tags": [{"key": "name", "value": "theirs"}]},
                },
            }},
            "errors": null,
        });
        let out = graphql(&answer, &readable).await.unwrap();
        let mut expected = answer.clone();
        expected["data"]["mlflowGetRun"]["run"]["modelVersions"] =
            serde_json::json!([version("mine", "1"), version("mine", "2")]);
        assert_eq!(out, expected);
        // Asked once per name, as registered models.
        assert_eq!(
            readable.calls.lock().unwrap().clone(),
            vec![(
                ListedKind::RegisteredModel,
                vec!["mine".to_owned(), "theirs".to_owned()]
            )]
        );

        // mlflowSearchRuns under aliases: every run's versions, wherever they are.
        let answer = serde_json::json!({"data": {
            "a": {"runs": [
                {"info": {"runUuid": "r1"}, "modelVersions": [version("theirs", "3")]},
                {"info": {"runUuid": "r2"}, "modelVersions": [version("mine", "4"), version("other", "1")]},
                {"info": {"runUuid": "r3"}, "modelVersions": []},
                {"info": {"runUuid": "r4"}, "modelVersions": null},
            ]},
            "b": {"runs": [{"modelVersions": [version("mine", "5")]}]},
        }});
        let out = graphql(&answer, &readable).await.unwrap();
        assert_eq!(
            out["data"]["a"]["runs"][0]["modelVersions"],
            serde_json::json!([])
        );
        assert_eq!(
            out["data"]["a"]["runs"][1]["modelVersions"],
            serde_json::json!([version("mine", "4")])
        );
        assert_eq!(
            out["data"]["a"]["runs"][2]["modelVersions"],
            serde_json::json!([])
        );
        assert_eq!(out["data"]["a"]["runs"][3]["modelVersions"], Value::Null);
        assert_eq!(
            out["data"]["b"]["runs"][0]["modelVersions"],
            serde_json::json!([version("mine", "5")])
        );
        assert_eq!(out["data"]["a"]["runs"][1]["info"]["runUuid"], "r2");
    }

    #[tokio::test]
    async fn graphql_answers_with_nothing_to_drop_are_verbatim() {
        let readable = FakeReadable::new([(ListedKind::RegisteredModel, "mine".to_owned())]);
        let mlflow = FakeMlflow::new(Listing::GraphqlModelVersions, Vec::new());
        for answer in [
            // MLflow's own spacing and key order, every version readable.
            r#"{"data":{"mlflowGetRun":{"run":{"modelVersions":[{"name":"mine","version":"1"}],"info":{"runUuid":"r1"}}}},"errors":null}"#,
            // No versions at all, an error answer, a denied field.
            r#"{"data":{"mlflowGetRun":{"run":{"modelVersions":[]}}},"errors":null}"#,
            r#"{"data":null,"errors":["Run with id=x not found"]}"#,
            r#"{"data":{"mlflowGetRun":null},"errors":null}"#,
        ] {
            let req = request(
                Listing::GraphqlModelVersions,
                "POST",
                "",
                Some("{}"),
                answer,
            );
            assert_eq!(
                filter_listing(&req, &readable, &mlflow).await.unwrap(),
                answer
            );
        }
    }

    #[tokio::test]
    async fn graphql_versions_without_a_name_are_dropped_and_bad_answers_refused() {
        let readable = FakeReadable::new([(ListedKind::RegisteredModel, "mine".to_owned())]);
        let answer = serde_json::json!({"data": {"mlflowGetRun": {"run": {"modelVersions": [
            {"version": "1"}, {"name": "", "version": "2"}, {"name": 5}, "mine", version("mine", "3"),
        ]}}}});
        let out = graphql(&answer, &readable).await.unwrap();
        assert_eq!(
            out["data"]["mlflowGetRun"]["run"]["modelVersions"],
            serde_json::json!([version("mine", "3")])
        );
        // A `modelVersions` that is not a list is left alone.
        let answer = serde_json::json!({"data": {"x": {"modelVersions": {"name": "theirs"}}}});
        assert_eq!(graphql(&answer, &readable).await.unwrap(), answer);

        let mlflow = FakeMlflow::new(Listing::GraphqlModelVersions, Vec::new());
        let req = request(Listing::GraphqlModelVersions, "POST", "", None, "<html>");
        let err = filter_listing(&req, &readable, &mlflow).await.unwrap_err();
        assert!(
            matches!(&err, ListingError::MalformedAnswer(m) if m.contains("GraphQL answer is not JSON")),
            "{err}"
        );
        // The resolver failing is an error, never the unfiltered answer.
        let answer = serde_json::json!({"data": {"run": {"modelVersions": [version("a", "1")]}}});
        let req = request(
            Listing::GraphqlModelVersions,
            "POST",
            "",
            None,
            &answer.to_string(),
        );
        let err = filter_listing(&req, &FixedReadable(vec![]), &mlflow)
            .await
            .unwrap_err();
        assert!(matches!(err, ListingError::Permissions(_)), "{err}");
    }

    // ----- malformed input ------------------------------------------------------------

    async fn error_of(
        req: ListingRequest,
        readable: &impl Readable,
        pages: &impl Pages,
    ) -> ListingError {
        filter_listing(&req, readable, pages).await.unwrap_err()
    }

    #[tokio::test]
    async fn malformed_answers_tokens_and_requests_are_errors_naming_the_fault() {
        let mlflow = FakeMlflow::new(Listing::Experiments, experiments(50));
        let none = FakeReadable::experiments([]);
        let two_rows =
            serde_json::json!({"experiments": experiments(2), "next_page_token": offset_token(2)})
                .to_string();

        let cases: Vec<(ListingRequest, &str)> = vec![
            (
                request(Listing::Experiments, "GET", "", None, "not json"),
                "not JSON",
            ),
            (
                request(Listing::Experiments, "GET", "", None, "[]"),
                "not a JSON object",
            ),
            (
                request(
                    Listing::Experiments,
                    "GET",
                    "",
                    None,
                    r#"{"experiments": {}}"#,
                ),
                "`experiments` is not an array",
            ),
            (
                request(
                    Listing::Experiments,
                    "GET",
                    "",
                    None,
                    r#"{"experiments": [{"name": "x"}]}"#,
                ),
                "row 0 of `experiments`: no `experiment_id`",
            ),
            (
                request(
                    Listing::Experiments,
                    "GET",
                    "",
                    None,
                    r#"{"experiments": [{"experiment_id": 5}]}"#,
                ),
                "`experiment_id` is not a string",
            ),
            (
                request(
                    Listing::Experiments,
                    "GET",
                    "",
                    None,
                    r#"{"experiments": [], "next_page_token": 3}"#,
                ),
                "`next_page_token` is not a string",
            ),
            (
                request(
                    Listing::Experiments,
                    "GET",
                    "max_results=ten",
                    None,
                    &two_rows,
                ),
                "max_results \"ten\"",
            ),
            (
                request(Listing::Experiments, "POST", "", Some("{"), &two_rows),
                "request body is not JSON",
            ),
            (
                request(
                    Listing::Experiments,
                    "POST",
                    "",
                    Some(r#"{"max_results": -1}"#),
                    &two_rows,
                ),
                "max_results -1",
            ),
            (
                request(
                    Listing::RegisteredModels,
                    "GET",
                    "",
                    None,
                    r#"{"registered_models": [{"name": "m", "tags": {}}]}"#,
                ),
                "`tags` is not an array",
            ),
            (
                request(
                    Listing::LoggedModels,
                    "POST",
                    "",
                    Some("{}"),
                    r#"{"models": [{"data": {}}]}"#,
                ),
                "no `info`",
            ),
            (
                request(
                    Listing::ArtifactRoot,
                    "GET",
                    "",
                    None,
                    r#"{"files": [{"is_dir": true}]}"#,
                ),
                "entry 0 of `files`: no `path`",
            ),
            (
                request(Listing::ArtifactRoot, "GET", "", None, r#"{"files": "x"}"#),
                "`files` is not an array",
            ),
        ];
        for (req, needle) in cases {
            let err = error_of(req, &none, &mlflow).await.to_string();
            assert!(err.contains(needle), "{err:?} should name {needle:?}");
        }

        // MLflow's next token cannot be read when the page is filled mid-way through.
        let readable = FakeReadable::experiments(["1", "3", "4"].map(str::to_owned));
        let bad_token =
            serde_json::json!({"experiments": experiments(2), "next_page_token": "%%%"})
                .to_string();
        let req = request(
            Listing::Experiments,
            "GET",
            "max_results=3",
            None,
            &bad_token,
        );
        let page = serde_json::json!({"experiments": experiments(5)});
        let err = error_of(req, &readable, &fixed_pages(page)).await;
        assert_eq!(
            err,
            ListingError::MalformedToken("\"%%%\" is not base64".into())
        );

        // A further page that is not a page.
        let partly = FakeReadable::experiments(["1".to_owned()]);
        let req = request(
            Listing::Experiments,
            "GET",
            "max_results=2",
            None,
            &two_rows,
        );
        let err = error_of(req.clone(), &partly, &fixed_pages(Value::from("oops"))).await;
        assert!(
            err.to_string()
                .contains("further page 1 is not a JSON object"),
            "{err}"
        );
        let mlflow_error =
            serde_json::json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad token"});
        let err = error_of(req.clone(), &partly, &fixed_pages(mlflow_error)).await;
        assert!(
            matches!(&err, ListingError::Upstream(m) if m.contains("bad token")),
            "{err}"
        );

        // The resolver answering the wrong number of verdicts.
        let err = error_of(req, &FixedReadable(vec![true]), &mlflow).await;
        assert!(
            matches!(&err, ListingError::Permissions(m) if m.contains("asked about 2 experiments, got 1")),
            "{err}"
        );

        // A logged-model token that is not JSON.
        let readable = FakeReadable::experiments(["1".to_owned()]);
        let answer = serde_json::json!({"models": logged_models(2)}).to_string();
        let token = base64_encode(b"offset=3");
        let body =
            serde_json::json!({"experiment_ids": ["1"], "max_results": 1, "page_token": token})
                .to_string();
        let req = request(Listing::LoggedModels, "POST", "", Some(&body), &answer);
        let err = error_of(req, &readable, &mlflow).await;
        assert!(
            matches!(&err, ListingError::MalformedToken(m) if m.contains("does not decode to a JSON object")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_endless_mlflow_ends_after_the_fetch_bound() {
        // Empty pages that always promise another one.
        let forever = fixed_pages(serde_json::json!({"next_page_token": offset_token(10)}));
        let first =
            serde_json::json!({"experiments": experiments(3), "next_page_token": offset_token(3)})
                .to_string();
        let req = request(Listing::Experiments, "GET", "max_results=3", None, &first);
        let out: Value = serde_json::from_str(
            &filter_listing(&req, &FakeReadable::experiments([]), &forever)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"next_page_token": offset_token(10)})
        );
        assert_eq!(*forever.fetches.lock().unwrap(), MAX_FETCHES);
    }
}
