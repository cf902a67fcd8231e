//! Reading a request the way MLflow reads it: the path (percent-decoded once, as
//! uvicorn and Werkzeug hand it to MLflow), the query string (`a=1&a=2`, `+`,
//! percent-escapes), the proto-JSON body, and the ids in all of them.
//!
//! The rule for ids (the system we replace, `utils/request_helpers.py`): MLflow reads
//! an id from the path parameter when the route has one, else from the query string
//! of a GET with a non-empty query, else from the JSON body; every other value of the
//! same field, in any source and in either spelling (`run_id` / `runId`), must pass
//! too. A request MLflow could read differently from us is refused (400).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::RequestError;

pub(crate) fn bad(message: impl Into<String>) -> RequestError {
    RequestError {
        message: message.into(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `text`, refusing a `%` not followed by two hex digits and a result
/// that is not UTF-8 (a client that means a `%` sends `%25`).
pub(crate) fn decode_strict(text: &str, what: &str) -> Result<String, RequestError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|&h| hex(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex(l)));
            let Some((h, l)) = pair else {
                return Err(bad(format!(
                    "the {what} has a '%' that does not start a percent-escape (send '%25' for '%')"
                )));
            };
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("the {what} is not utf-8 once percent-decoded")))
}

/// Percent-decodes `text` as Python's `urllib.parse.unquote` does: a `%` that starts no
/// escape stays as it is. A result that is not UTF-8 is refused (Python would put
/// U+FFFD in its place).
pub(crate) fn decode_lenient(text: &str, what: &str) -> Result<String, RequestError> {
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = if bytes[i] == b'%' {
            bytes
                .get(i + 1)
                .and_then(|&h| hex(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex(l)))
        } else {
            None
        };
        match pair {
            Some((h, l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("the {what} is not utf-8 once percent-decoded")))
}

/// Decodes until nothing changes, at most ten rounds, as MLflow's
/// `validate_path_is_safe` does with artifact paths (`%252e%252e` is `..` to it).
pub(crate) fn decode_fully(text: &str, what: &str) -> Result<String, RequestError> {
    let mut current = text.to_string();
    for _ in 0..10 {
        let next = decode_lenient(&current, what)?;
        if next == current {
            return Ok(current);
        }
        current = next;
    }
    Err(bad(format!(
        "the {what} is still percent-encoded after ten rounds of decoding"
    )))
}

fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control())
}

/// The path and query of a request line, split and checked.
pub(crate) struct RequestLine<'a> {
    /// Percent-decoded once, as MLflow's router sees it.
    pub path: String,
    /// As sent (parsed by [`parse_query`] when a route needs it).
    pub raw_query: &'a str,
}

pub(crate) fn split_request_line(path_and_query: &str) -> Result<RequestLine<'_>, RequestError> {
    let (raw_path, raw_query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    if raw_path.contains('#') || raw_query.contains('#') {
        return Err(bad(
            "the request path has a fragment ('#'), which mlflow would not see",
        ));
    }
    if !raw_path.starts_with('/') {
        return Err(bad(format!(
            "the request path {raw_path:?} does not start with '/'"
        )));
    }
    let path = decode_strict(raw_path, "request path")?;
    if has_control(&path) {
        return Err(bad(
            "the request path has control characters once percent-decoded",
        ));
    }
    Ok(RequestLine { path, raw_query })
}

/// `a=1&a=2&b=x+y&c=%2F`: every pair in order, `+` as a space, percent-decoded.
pub(crate) fn parse_query(raw: &str) -> Result<Vec<(String, String)>, RequestError> {
    let mut pairs = Vec::new();
    for piece in raw.split('&') {
        if piece.is_empty() {
            continue;
        }
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        let key = decode_strict(&key.replace('+', " "), "query string")?;
        let value = decode_strict(&value.replace('+', " "), "query string")?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A JSON value as serde_json reads it, but refusing an object that gives one key twice
/// (Python keeps the last; a reader keeping the first would see another request).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn parse_strict(text: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Strict>(text)
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

/// The JSON body of a proto route: none or blank is `{}` (as MLflow reads it); a
/// JSON string holding JSON is decoded once more (MLflow does that for old clients);
/// anything but an object is refused.
pub(crate) fn parse_body(body: Option<&[u8]>) -> Result<Map<String, Value>, RequestError> {
    let Some(body) = body else {
        return Ok(Map::new());
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value =
        parse_strict(body).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let value = match value {
        Value::String(inner) => parse_strict(inner.as_bytes()).map_err(|e| {
            bad(format!(
                "the request body is a JSON string that does not hold valid JSON: {e}"
            ))
        })?,
        other => other,
    };
    match value {
        Value::Object(map) => {
            check_spellings(&map, "the request body")?;
            Ok(map)
        }
        other => Err(bad(format!(
            "the request body must be a JSON object, not {}",
            json_kind(&other)
        ))),
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `run_uuid` → `runUuid`: protobuf's JSON name of a field.
pub(crate) fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A body giving one field in both spellings is ambiguous (protobuf lets the later
/// win): refused, as MLflow itself refuses it.
pub(crate) fn check_spellings(object: &Map<String, Value>, what: &str) -> Result<(), RequestError> {
    for key in object.keys() {
        if !key.contains('_') {
            continue;
        }
        let other = camel(key);
        if other != *key && object.contains_key(&other) {
            return Err(bad(format!(
                "{what} gives both {key:?} and {other:?}: send only one of them"
            )));
        }
    }
    Ok(())
}

/// The value of field `snake` in `object`, in either spelling.
pub(crate) fn field<'v>(
    object: &'v Map<String, Value>,
    snake: &str,
    what: &str,
) -> Result<Option<&'v Value>, RequestError> {
    let other = camel(snake);
    match (object.get(snake), object.get(&other)) {
        (Some(_), Some(_)) if other != snake => Err(bad(format!(
            "{what} gives both {snake:?} and {other:?}: send only one of them"
        ))),
        (Some(v), _) | (None, Some(v)) => Ok(match v {
            Value::Null => None,
            v => Some(v),
        }),
        (None, None) => Ok(None),
    }
}

/// An object-valued field (`trace.trace_info`): absent or null is `None`.
pub(crate) fn object<'v>(
    parent: &'v Map<String, Value>,
    snake: &str,
    what: &str,
) -> Result<Option<&'v Map<String, Value>>, RequestError> {
    match field(parent, snake, what)? {
        None => Ok(None),
        Some(Value::Object(map)) => {
            check_spellings(map, &format!("{what} field {snake:?}"))?;
            Ok(Some(map))
        }
        Some(other) => Err(bad(format!(
            "field {snake:?} of {what} must be an object, not {}",
            json_kind(other)
        ))),
    }
}

/// A list-valued field (`metrics`): absent or null is empty.
pub(crate) fn list<'v>(
    parent: &'v Map<String, Value>,
    snake: &str,
    what: &str,
) -> Result<&'v [Value], RequestError> {
    match field(parent, snake, what)? {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(bad(format!(
            "field {snake:?} of {what} must be a list, not {}",
            json_kind(other)
        ))),
    }
}

/// The items of a list that must be objects (`metrics[]`).
pub(crate) fn objects<'v>(
    parent: &'v Map<String, Value>,
    snake: &str,
    what: &str,
) -> Result<Vec<&'v Map<String, Value>>, RequestError> {
    list(parent, snake, what)?
        .iter()
        .map(|item| match item {
            Value::Object(map) => {
                check_spellings(map, &format!("an item of {snake:?}"))?;
                Ok(map)
            }
            other => Err(bad(format!(
                "the items of {snake:?} must be objects, not {}",
                json_kind(other)
            ))),
        })
        .collect()
}

/// One id as MLflow's proto parser takes it: a string, or an integer (read as its
/// decimal string). Anything else is refused, never skipped.
pub(crate) fn scalar(value: &Value, name: &str) -> Result<Option<String>, RequestError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        other => Err(bad(format!(
            "field {name:?} must be a string, not {}",
            json_kind(other)
        ))),
    }
}

/// The values of a field: a list for a repeated field, else one scalar.
pub(crate) fn scalars(
    value: &Value,
    name: &str,
    repeated: bool,
) -> Result<Vec<String>, RequestError> {
    match value {
        Value::Array(items) if repeated => {
            let mut out = Vec::new();
            for item in items {
                if matches!(item, Value::Array(_)) {
                    return Err(bad(format!(
                        "the items of {name:?} must be strings, not lists"
                    )));
                }
                out.extend(scalar(item, name)?);
            }
            Ok(out)
        }
        Value::Array(_) => Err(bad(format!("field {name:?} must be a string, not a list"))),
        other => Ok(scalar(other, name)?.into_iter().collect()),
    }
}

/// The spellings of one field the request may use: `["run_id", "run_uuid"]` are one
/// field to MLflow (`run_uuid` is the deprecated name), each also in camelCase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub names: &'static [&'static str],
    pub repeated: bool,
}

impl Field {
    pub const fn one(names: &'static [&'static str]) -> Self {
        Field {
            names,
            repeated: false,
        }
    }
    pub const fn many(names: &'static [&'static str]) -> Self {
        Field {
            names,
            repeated: true,
        }
    }

    /// `run_id (or run_uuid)`, for messages.
    pub fn label(&self) -> String {
        match self.names {
            [] => String::from("id"),
            [one] => (*one).to_string(),
            [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
        }
    }

    fn matches(&self, key: &str) -> bool {
        self.names.iter().any(|n| *n == key || camel(n) == key)
    }
}

pub(crate) const EXPERIMENT_ID: Field = Field::one(&["experiment_id"]);
pub(crate) const EXPERIMENT_NAME: Field = Field::one(&["experiment_name"]);
pub(crate) const EXPERIMENT_IDS: Field = Field::many(&["experiment_ids"]);
pub(crate) const RUN: Field = Field::one(&["run_id", "run_uuid"]);
pub(crate) const RUN_IDS: Field = Field::many(&["run_ids", "run_id"]);
pub(crate) const TRACE: Field = Field::one(&["trace_id", "request_id"]);
pub(crate) const TRACE_IDS: Field = Field::many(&["trace_ids"]);
pub(crate) const REQUEST_IDS: Field = Field::many(&["request_ids"]);
pub(crate) const MODEL_ID: Field = Field::one(&["model_id"]);
pub(crate) const NAME: Field = Field::one(&["name"]);
pub(crate) const NEW_NAME: Field = Field::one(&["new_name"]);
pub(crate) const KEY: Field = Field::one(&["key"]);
pub(crate) const SOURCE: Field = Field::one(&["source"]);
pub(crate) const SOURCE_RUN_ID: Field = Field::one(&["source_run_id"]);
pub(crate) const PATH: Field = Field::many(&["path"]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Path,
    Query,
    Body,
}

impl Origin {
    fn describe(self) -> &'static str {
        match self {
            Origin::Path => "request path",
            Origin::Query => "query string",
            Origin::Body => "JSON body",
        }
    }
}

/// How a route reads its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// A proto route: path parameter, else a GET's non-empty query, else the JSON body.
    Proto,
    /// A plain Flask handler reading `request.args` only (whatever the method).
    Query,
    /// A plain Flask handler reading `request.json` only.
    Json,
    /// Nothing but the path (artifact routes, routes without ids).
    Path,
}

/// The values of one field: the one MLflow reads, and all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ids {
    /// The value where MLflow reads it (the first, when repeated there).
    pub primary: Option<String>,
    /// Every distinct non-empty value in every source, the primary's first.
    pub all: Vec<String>,
}

/// One request, parsed for a route.
pub(crate) struct Req<'a> {
    /// `GET` for a HEAD.
    pub method: &'a str,
    pub params: &'a [(&'static str, String)],
    pub query: Vec<(String, String)>,
    /// The JSON body, for routes that read one (empty otherwise).
    pub body: Map<String, Value>,
    pub reads: Reads,
}

impl Req<'_> {
    fn primary_origin(&self, field: &Field) -> Origin {
        if self.params.iter().any(|(n, _)| field.names.contains(n)) {
            return Origin::Path;
        }
        match self.reads {
            Reads::Query => Origin::Query,
            Reads::Json => Origin::Body,
            Reads::Path => Origin::Path,
            Reads::Proto if self.method == "GET" && !self.query.is_empty() => Origin::Query,
            Reads::Proto => Origin::Body,
        }
    }

    /// Every value of `field` in every source, with where it came from.
    fn values(&self, field: &Field) -> Result<Vec<(Origin, String)>, RequestError> {
        let mut out = Vec::new();
        for (name, value) in self.params {
            if field.names.contains(name) {
                out.push((Origin::Path, value.clone()));
            }
        }
        for (key, value) in &self.query {
            if field.matches(key) {
                out.push((Origin::Query, value.clone()));
            }
        }
        for name in field.names {
            let other = camel(name);
            let keys = if other == *name {
                vec![(*name).to_string()]
            } else {
                vec![(*name).to_string(), other]
            };
            for key in keys {
                if let Some(value) = self.body.get(&key) {
                    for v in scalars(value, &key, field.repeated)? {
                        out.push((Origin::Body, v));
                    }
                }
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Ok(out)
    }

    /// The values of `field`; `required`: MLflow's source must hold one, else 400.
    /// A path parameter and another value that differs from it are refused.
    pub fn ids(&self, field: &Field, required: bool) -> Result<Ids, RequestError> {
        let values = self.values(field)?;
        let origin = self.primary_origin(field);
        let primary = values
            .iter()
            .find(|(o, _)| *o == origin)
            .map(|(_, v)| v.clone());
        if required && primary.is_none() {
            let place = if self.method == "GET" && origin == Origin::Body {
                "query string"
            } else {
                origin.describe()
            };
            return Err(bad(format!(
                "the request gives no {} in its {place}, where mlflow reads it",
                field.label()
            )));
        }
        if origin == Origin::Path {
            if let Some(p) = &primary {
                if let Some((o, v)) = values.iter().find(|(_, v)| v != p) {
                    return Err(bad(format!(
                        "the request path names {} {p:?} but its {} names {v:?}",
                        field.label(),
                        o.describe()
                    )));
                }
            }
        }
        let mut all: Vec<String> = Vec::new();
        if let Some(p) = &primary {
            all.push(p.clone());
        }
        for (_, v) in values {
            if !all.contains(&v) {
                all.push(v);
            }
        }
        Ok(Ids { primary, all })
    }

    /// All values of `field`, none required.
    pub fn all(&self, field: &Field) -> Result<Vec<String>, RequestError> {
        Ok(self.ids(field, false)?.all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn strict_decoding_refuses_broken_escapes_and_non_utf8() {
        assert_eq!(decode_strict("a%2Fb%20c", "x").unwrap(), "a/b c");
        assert!(decode_strict("100%", "x")
            .unwrap_err()
            .message
            .contains("'%'"));
        assert!(decode_strict("%zz", "x").is_err());
        assert!(decode_strict("%ff", "x")
            .unwrap_err()
            .message
            .contains("utf-8"));
    }

    #[test]
    fn lenient_decoding_keeps_a_stray_percent_as_python_does() {
        assert_eq!(decode_lenient("100%done", "x").unwrap(), "100%done");
        assert_eq!(decode_lenient("%31", "x").unwrap(), "1");
        assert_eq!(decode_fully("%25252e", "x").unwrap(), ".");
    }

    #[test]
    fn query_strings_repeat_and_decode() {
        let q = parse_query("a=1&a=2&b=x+y&c=%2F&&d").unwrap();
        assert_eq!(
            q,
            vec![
                ("a".into(), "1".into()),
                ("a".into(), "2".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "/".into()),
                ("d".into(), "".into()),
            ]
        );
        assert!(parse_query("a=%G1").is_err());
    }

    #[test]
    fn bodies_must_be_json_objects_without_repeated_keys() {
        assert!(parse_body(None).unwrap().is_empty());
        assert!(parse_body(Some(b"  \n")).unwrap().is_empty());
        let e = parse_body(Some(b"run_id=abc")).unwrap_err().message;
        assert!(e.starts_with("the request body is not valid JSON"), "{e}");
        let e = parse_body(Some(br#"{"run_id":"a","run_id":"b"}"#))
            .unwrap_err()
            .message;
        assert!(e.contains("appears twice"), "{e}");
        let e = parse_body(Some(b"[1]")).unwrap_err().message;
        assert!(e.contains("must be a JSON object, not a list"), "{e}");
        // Double-encoded, as old clients send it.
        let m = parse_body(Some(br#""{\"run_id\": \"abc\"}""#)).unwrap();
        assert_eq!(m["run_id"], "abc");
    }

    #[test]
    fn both_spellings_of_one_field_are_refused() {
        let e = parse_body(Some(br#"{"run_id":"a","runId":"b"}"#))
            .unwrap_err()
            .message;
        assert!(e.contains("\"run_id\"") && e.contains("\"runId\""), "{e}");
        assert_eq!(camel("run_uuid"), "runUuid");
        assert_eq!(camel("name"), "name");
    }

    #[test]
    fn numbers_are_read_as_their_decimal_string() {
        assert_eq!(
            scalar(&serde_json::json!(12), "x").unwrap(),
            Some("12".into())
        );
        assert!(scalar(&serde_json::json!(1.5), "x").is_err());
        assert!(scalar(&serde_json::json!(true), "x").is_err());
        assert_eq!(
            scalars(&serde_json::json!(["1", 2]), "x", true).unwrap(),
            vec!["1", "2"]
        );
        assert!(scalars(&serde_json::json!(["1"]), "x", false).is_err());
    }
}
