//! MLflow's GraphQL endpoint (`GET` / `POST /graphql`), authorized per root field.
//!
//! MLflow's UI asks four queries of it: a run (`mlflowGetRun`), metric histories of
//! runs (`mlflowGetMetricHistoryBulkInterval`), an experiment (`mlflowGetExperiment`)
//! and a search of runs (`mlflowSearchRuns`). A non-admin may ask a `query` whose root
//! fields (aliases and fragments looked through) are all among:
//! - `mlflowGetExperiment`: READ on `input.experimentId`;
//! - `mlflowGetRun`, `mlflowListArtifacts`: READ on the experiment of `input.runId`
//!   and of `input.runUuid` (MLflow takes the first that is set);
//! - `mlflowGetMetricHistoryBulkInterval`: READ on the experiment of every
//!   `input.runIds`;
//! - `mlflowSearchRuns`: READ on every `input.experimentIds`;
//! - `__typename`.
//!
//! A field naming no id, a mutation or subscription, introspection (`__schema`,
//! `__type`) and every other root field (`mlflowSearchModelVersions`, `test`) are
//! for admins only. A selected `modelVersions` (a run's registered-model versions,
//! which MLflow looks up unfiltered) has the answer filtered by the policy service
//! ([`Listing::GraphqlModelVersions`]); it finds those arrays by their key and judges
//! each version by its `name`, so both must be what they say: `modelVersions` and its
//! `name` may not be aliased, and no other field may be aliased to either (admins only).
//!
//! The document is read as graphql-core 3.2 (MLflow 3.17's parser) reads it: its
//! lexer's strings and escapes (`\u{...}`, surrogate pairs), block strings, numbers,
//! names and ignored characters, and the executable grammar (operations, fragments,
//! variables with defaults, directives, which are read and set aside). Arguments come
//! from literals or from `variables`, resolved as GraphQL does (a declared variable
//! not given takes its default; one with neither is a 400 here). Anything the
//! grammar refuses is a 400 naming the line, the column and what was found. The work
//! is bounded: [`MAX_DOCUMENT_BYTES`], [`MAX_TOKENS`], [`MAX_DEPTH`] (selections,
//! values and types, fragments expanded) and [`MAX_SELECTIONS`].
//!
//! Where MLflow reads the request (`handlers._graphql`): `query`, `variables` and
//! `operationName` of the JSON body, for a GET as for a POST (Flask's
//! `get_json(force=True)`); it never reads the query string, and a GET without a body
//! fails there (500). The filter reads a GET's body the same way; a GET without a body
//! is read from its query string (`query`, `variables` as JSON, `operationName`), and
//! a GET giving both is refused, since MLflow would run the body's.

use std::collections::HashMap;

use serde_json::{Map, Number, Value as Json};

use super::request::{bad, camel, json_kind, scalars};
use super::{Access, After, RequestError};
use crate::permission::{Capability, Requirement, Target};
use crate::wire::Listing;

/// The longest document read, in bytes (MLflow's UI sends about 1.5 KB).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 100_000;
/// The most tokens read (comments and ignored characters not counted).
pub(crate) const MAX_TOKENS: usize = 10_000;
/// The deepest nesting of selection sets, inline fragments, fragment spreads, list
/// and object values and list types (MLflow itself refuses selections nested past 10).
pub(crate) const MAX_DEPTH: usize = 32;
/// The most fields and fragments looked at, fragments expanded each time they are spread.
pub(crate) const MAX_SELECTIONS: usize = 2_000;

const MODEL_VERSIONS: &str = "modelVersions";
const NAME: &str = "name";
/// The keys of a GraphQL request, in the JSON body or the query string.
const PARTS: [&str; 3] = ["query", "variables", "operationName"];

/// What `/graphql` needs, and what follows MLflow's answer.
pub(crate) fn decide(
    method: &str,
    query: &[(String, String)],
    body: &Map<String, Json>,
) -> Result<(Access, After), RequestError> {
    let request = read_request(method, query, body)?;
    analyze(
        &request.document,
        &request.variables,
        request.operation_name.as_deref(),
    )
}

// ---------------------------------------------------------------------------------
// The request

struct GraphqlRequest {
    document: String,
    variables: Map<String, Json>,
    operation_name: Option<String>,
}

fn read_request(
    method: &str,
    query: &[(String, String)],
    body: &Map<String, Json>,
) -> Result<GraphqlRequest, RequestError> {
    let in_query = query.iter().any(|(k, _)| PARTS.contains(&k.as_str()));
    if method == "GET" && in_query {
        if !body.is_empty() {
            return Err(bad(
                "the graphql request gives a query both in its JSON body, which mlflow reads, \
                 and in its query string: send it in one place",
            ));
        }
        return from_query_string(query);
    }
    if method == "GET" && body.is_empty() {
        return Err(bad(
            "the graphql request gives no \"query\", neither in a JSON body (where mlflow reads \
             it) nor in its query string",
        ));
    }
    from_body(body)
}

fn from_body(body: &Map<String, Json>) -> Result<GraphqlRequest, RequestError> {
    let document = match body.get("query") {
        Some(Json::String(text)) => text.clone(),
        None | Some(Json::Null) => {
            return Err(bad(
                "the graphql request gives no \"query\" in its JSON body",
            ))
        }
        Some(other) => {
            return Err(bad(format!(
                "the \"query\" of the graphql request must be a string, not {}",
                json_kind(other)
            )))
        }
    };
    let variables = match body.get("variables") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(map)) => map.clone(),
        Some(other) => {
            return Err(bad(format!(
                "the \"variables\" of the graphql request must be a JSON object, not {}",
                json_kind(other)
            )))
        }
    };
    let operation_name = match body.get("operationName") {
        None | Some(Json::Null) => None,
        Some(Json::String(name)) => Some(name.clone()),
        Some(other) => {
            return Err(bad(format!(
                "the \"operationName\" of the graphql request must be a string, not {}",
                json_kind(other)
            )))
        }
    };
    Ok(GraphqlRequest {
        document,
        variables,
        operation_name,
    })
}

fn from_query_string(query: &[(String, String)]) -> Result<GraphqlRequest, RequestError> {
    let mut parts: [Option<&str>; 3] = [None; 3];
    for (key, value) in query {
        if let Some(index) = PARTS.iter().position(|p| p == key) {
            if let Some(slot) = parts.get_mut(index) {
                if slot.is_some() {
                    return Err(bad(format!(
                        "the query string of the graphql request gives {key:?} twice"
                    )));
                }
                *slot = Some(value.as_str());
            }
        }
    }
    let [document, variables, operation_name] = parts;
    let Some(document) = document else {
        return Err(bad(
            "the graphql request gives no \"query\" in its query string",
        ));
    };
    let variables = match variables.filter(|v| !v.trim().is_empty()) {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(map)) => map,
            Ok(Json::Null) => Map::new(),
            Ok(other) => {
                return Err(bad(format!(
                    "the \"variables\" in the query string of the graphql request must be a \
                     JSON object, not {}",
                    json_kind(&other)
                )))
            }
            Err(e) => {
                return Err(bad(format!(
                    "the \"variables\" in the query string of the graphql request are not \
                     valid JSON: {e}"
                )))
            }
        },
    };
    Ok(GraphqlRequest {
        document: document.to_string(),
        variables,
        operation_name: operation_name.map(str::to_string),
    })
}

// ---------------------------------------------------------------------------------
// Lexer (graphql-core 3.2's `Lexer`)

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `! $ & ( ) : = @ [ ] { } |`
    Punct(char),
    /// `...`
    Spread,
    Name(String),
    Int(String),
    Float(String),
    /// A string or block string, its value decoded.
    Str(String),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Where it starts, in characters.
    at: usize,
}

/// Line and column (both from 1, in characters) of a position, lines ending at `\n`,
/// `\r\n` or `\r` as in GraphQL.
fn line_column(source: &[char], at: usize) -> (usize, usize) {
    let mut line = 1;
    let mut line_start = 0;
    let mut i = 0;
    while i < at.min(source.len()) {
        match source.get(i) {
            Some('\n') => {
                line += 1;
                line_start = i + 1;
            }
            Some('\r') => {
                if source.get(i + 1) == Some(&'\n') && i + 1 < at {
                    i += 1;
                }
                line += 1;
                line_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    (line, at.saturating_sub(line_start) + 1)
}

fn located(source: &[char], at: usize, what: &str) -> RequestError {
    let (line, column) = line_column(source, at);
    bad(format!(
        "the graphql query is malformed at line {line}, column {column}: {what}"
    ))
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_continue(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

struct Lexer<'s> {
    source: &'s [char],
    at: usize,
    tokens: Vec<Token>,
}

impl<'s> Lexer<'s> {
    fn new(source: &'s [char]) -> Self {
        Lexer {
            source,
            at: 0,
            tokens: Vec::new(),
        }
    }

    fn peek(&self, offset: usize) -> Option<char> {
        self.source.get(self.at + offset).copied()
    }

    fn error(&self, at: usize, what: &str) -> RequestError {
        located(self.source, at, what)
    }

    fn run(mut self) -> Result<Vec<Token>, RequestError> {
        loop {
            let start = self.at;
            let Some(c) = self.peek(0) else {
                self.tokens.push(Token {
                    tok: Tok::End,
                    at: start,
                });
                return Ok(self.tokens);
            };
            let tok = match c {
                ' ' | '\t' | ',' | '\u{feff}' | '\n' | '\r' => {
                    self.at += 1;
                    continue;
                }
                '#' => {
                    while self.peek(0).is_some_and(|c| c != '\n' && c != '\r') {
                        self.at += 1;
                    }
                    continue;
                }
                '"' if self.peek(1) == Some('"') && self.peek(2) == Some('"') => {
                    self.block_string()?
                }
                '"' => self.string()?,
                '!' | '$' | '&' | '(' | ')' | ':' | '=' | '@' | '[' | ']' | '{' | '}' | '|' => {
                    self.at += 1;
                    Tok::Punct(c)
                }
                '.' if self.peek(1) == Some('.') && self.peek(2) == Some('.') => {
                    self.at += 3;
                    Tok::Spread
                }
                '-' | '0'..='9' => self.number()?,
                c if is_name_start(c) => self.name(),
                '\'' => {
                    return Err(self.error(
                        start,
                        "unexpected single quote: graphql strings take double quotes",
                    ))
                }
                c => return Err(self.error(start, &format!("unexpected character {c:?}"))),
            };
            if self.tokens.len() >= MAX_TOKENS {
                return Err(self.error(
                    start,
                    &format!(
                        "the query has more than {MAX_TOKENS} tokens, more than the filter reads"
                    ),
                ));
            }
            self.tokens.push(Token { tok, at: start });
        }
    }

    fn name(&mut self) -> Tok {
        let start = self.at;
        self.at += 1;
        while self.peek(0).is_some_and(is_name_continue) {
            self.at += 1;
        }
        Tok::Name(self.text(start))
    }

    fn text(&self, start: usize) -> String {
        self.source
            .get(start..self.at)
            .unwrap_or_default()
            .iter()
            .collect()
    }

    fn digits(&mut self) -> Result<(), RequestError> {
        match self.peek(0) {
            Some(c) if c.is_ascii_digit() => {}
            other => {
                return Err(self.error(
                    self.at,
                    &format!(
                        "invalid number: expected a digit, found {}",
                        char_name(other)
                    ),
                ))
            }
        }
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<Tok, RequestError> {
        let start = self.at;
        let mut float = false;
        if self.peek(0) == Some('-') {
            self.at += 1;
        }
        if self.peek(0) == Some('0') {
            self.at += 1;
            if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error(self.at, "invalid number: a digit after a leading 0"));
            }
        } else {
            self.digits()?;
        }
        if self.peek(0) == Some('.') {
            float = true;
            self.at += 1;
            self.digits()?;
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            float = true;
            self.at += 1;
            if matches!(self.peek(0), Some('+' | '-')) {
                self.at += 1;
            }
            self.digits()?;
        }
        if let Some(c) = self.peek(0).filter(|c| *c == '.' || is_name_start(*c)) {
            return Err(self.error(
                self.at,
                &format!("invalid number: expected a digit, found {c:?}"),
            ));
        }
        let text = self.text(start);
        Ok(if float {
            Tok::Float(text)
        } else {
            Tok::Int(text)
        })
    }

    fn string(&mut self) -> Result<Tok, RequestError> {
        let start = self.at;
        self.at += 1;
        let mut value = String::new();
        loop {
            match self.peek(0) {
                None | Some('\n' | '\r') => return Err(self.error(start, "unterminated string")),
                Some('"') => {
                    self.at += 1;
                    return Ok(Tok::Str(value));
                }
                Some('\\') => value.push(self.escape()?),
                Some(c) => {
                    value.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn hex4(&self, offset: usize) -> Option<u32> {
        let mut code = 0;
        for i in 0..4 {
            code = (code << 4) | self.peek(offset + i)?.to_digit(16)?;
        }
        Some(code)
    }

    /// One escape sequence at `self.at` (a backslash), as graphql-core decodes it.
    fn escape(&mut self) -> Result<char, RequestError> {
        let start = self.at;
        let invalid_unicode = |lexer: &Self, size: usize| {
            let shown: String = (0..size).filter_map(|i| lexer.peek(i)).collect();
            lexer.error(start, &format!("invalid unicode escape sequence {shown:?}"))
        };
        match self.peek(1) {
            Some('u') if self.peek(2) == Some('{') => {
                // `\u{1F600}`: at most 12 characters (`\u{00000000}`).
                let mut point: u64 = 0;
                let mut size = 3;
                while size < 12 {
                    let Some(c) = self.peek(size) else { break };
                    size += 1;
                    if c == '}' {
                        let decoded = u32::try_from(point).ok().and_then(char::from_u32);
                        return match decoded {
                            Some(ch) if size >= 5 => {
                                self.at += size;
                                Ok(ch)
                            }
                            _ => Err(invalid_unicode(self, size)),
                        };
                    }
                    let Some(digit) = c.to_digit(16) else { break };
                    point = (point << 4) | u64::from(digit);
                }
                Err(invalid_unicode(self, size))
            }
            Some('u') => {
                let Some(code) = self.hex4(2) else {
                    return Err(invalid_unicode(self, 6));
                };
                if let Some(ch) = char::from_u32(code) {
                    self.at += 6;
                    return Ok(ch);
                }
                // A surrogate pair of two escapes is one character.
                if (0xD800..=0xDBFF).contains(&code)
                    && self.peek(6) == Some('\\')
                    && self.peek(7) == Some('u')
                {
                    if let Some(low) = self.hex4(8).filter(|l| (0xDC00..=0xDFFF).contains(l)) {
                        let point = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        if let Some(ch) = char::from_u32(point) {
                            self.at += 12;
                            return Ok(ch);
                        }
                    }
                }
                Err(invalid_unicode(self, 6))
            }
            other => {
                let ch = match other {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('/') => '/',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    _ => {
                        let shown: String = (0..2).filter_map(|i| self.peek(i)).collect();
                        return Err(
                            self.error(start, &format!("invalid escape sequence {shown:?}"))
                        );
                    }
                };
                self.at += 2;
                Ok(ch)
            }
        }
    }

    fn block_string(&mut self) -> Result<Tok, RequestError> {
        let start = self.at;
        self.at += 3;
        let mut lines: Vec<String> = Vec::new();
        let mut line = String::new();
        loop {
            match self.peek(0) {
                None => return Err(self.error(start, "unterminated block string")),
                Some('"') if self.peek(1) == Some('"') && self.peek(2) == Some('"') => {
                    self.at += 3;
                    lines.push(line);
                    return Ok(Tok::Str(dedent_block_string(&lines)));
                }
                Some('\\')
                    if self.peek(1) == Some('"')
                        && self.peek(2) == Some('"')
                        && self.peek(3) == Some('"') =>
                {
                    line.push_str("\"\"\"");
                    self.at += 4;
                }
                Some(c @ ('\n' | '\r')) => {
                    lines.push(std::mem::take(&mut line));
                    self.at += if c == '\r' && self.peek(1) == Some('\n') {
                        2
                    } else {
                        1
                    };
                }
                Some(c) => {
                    line.push(c);
                    self.at += 1;
                }
            }
        }
    }
}

fn char_name(c: Option<char>) -> String {
    match c {
        Some(c) => format!("{c:?}"),
        None => String::from("the end of the query"),
    }
}

/// graphql-core's `dedent_block_string_lines`: the common indentation of the lines
/// after the first goes, and so do blank lines at the start and the end.
fn dedent_block_string(lines: &[String]) -> String {
    let indent = |line: &str| line.chars().take_while(|c| *c == ' ' || *c == '\t').count();
    let mut common = usize::MAX;
    let mut first = None;
    let mut last = None;
    for (i, line) in lines.iter().enumerate() {
        let n = indent(line);
        if n == line.chars().count() {
            continue;
        }
        first.get_or_insert(i);
        last = Some(i);
        if i > 0 && n < common {
            common = n;
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    lines
        .iter()
        .enumerate()
        .skip(first)
        .take(last + 1 - first)
        // The indentation is ASCII: a character count is a byte offset within it.
        .map(|(i, line)| {
            if i == 0 {
                line.as_str()
            } else {
                line.get(common..).unwrap_or("")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------
// Parser (the executable definitions of graphql-core 3.2's `Parser`)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

#[derive(Debug)]
struct Operation {
    kind: OperationKind,
    name: Option<String>,
    variables: Vec<VariableDefinition>,
    selections: Vec<Selection>,
}

#[derive(Debug)]
struct VariableDefinition {
    name: String,
    default: Option<Value>,
    at: usize,
}

#[derive(Debug)]
struct Fragment {
    name: String,
    selections: Vec<Selection>,
    at: usize,
}

#[derive(Debug)]
enum Definition {
    Operation(Operation),
    Fragment(Fragment),
}

#[derive(Debug)]
enum Selection {
    Field(Field),
    Spread { name: String, at: usize },
    Inline(Vec<Selection>),
}

#[derive(Debug)]
struct Field {
    alias: Option<String>,
    name: String,
    arguments: Vec<Argument>,
    selections: Vec<Selection>,
}

impl Field {
    /// The key of the field in the answer.
    fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug)]
struct Argument {
    name: String,
    value: Value,
    at: usize,
}

#[derive(Debug)]
enum Value {
    Variable { name: String, at: usize },
    Int(String),
    Float(String),
    Str(String),
    Bool(bool),
    Null,
    Enum(String),
    List(Vec<Value>),
    Object(Vec<(String, Value, usize)>),
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Punct(c) => format!("'{c}'"),
        Tok::Spread => String::from("'...'"),
        Tok::Name(name) => format!("the name {name:?}"),
        Tok::Int(text) | Tok::Float(text) => format!("the number {text}"),
        Tok::Str(_) => String::from("a string"),
        Tok::End => String::from("the end of the query"),
    }
}

struct Parser<'s> {
    source: &'s [char],
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn new(source: &'s [char], tokens: Vec<Token>) -> Self {
        Parser {
            source,
            tokens,
            at: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, offset: usize) -> &Tok {
        self.tokens
            .get(self.at + offset)
            .map_or(&Tok::End, |t| &t.tok)
    }

    /// A description (a string) before an operation, a fragment or a variable, as
    /// graphql-core 3.2.14 reads one: set aside.
    fn description(&mut self) {
        if matches!(self.peek(), Tok::Str(_)) {
            self.at += 1;
        }
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.source.len(), |t| t.at)
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if tok != Tok::End {
            self.at += 1;
        }
        tok
    }

    fn is_punct(&self, c: char) -> bool {
        *self.peek() == Tok::Punct(c)
    }

    fn is_name(&self, name: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == name)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let found = self.is_punct(c);
        if found {
            self.at += 1;
        }
        found
    }

    fn unexpected(&self, expected: &str) -> RequestError {
        located(
            self.source,
            self.position(),
            &format!("expected {expected}, found {}", describe(self.peek())),
        )
    }

    fn expect_punct(&mut self, c: char) -> Result<(), RequestError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{c}'")))
        }
    }

    fn name(&mut self, what: &str) -> Result<String, RequestError> {
        match self.peek() {
            Tok::Name(name) => {
                let name = name.clone();
                self.at += 1;
                Ok(name)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn enter(&mut self) -> Result<(), RequestError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(located(
                self.source,
                self.position(),
                &format!(
                    "the query nests deeper than {MAX_DEPTH} levels, more than the filter reads"
                ),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn document(&mut self) -> Result<Vec<Definition>, RequestError> {
        let mut definitions = Vec::new();
        loop {
            let definition = match self.peek() {
                Tok::End if !definitions.is_empty() => return Ok(definitions),
                Tok::Punct('{') => Definition::Operation(Operation {
                    kind: OperationKind::Query,
                    name: None,
                    variables: Vec::new(),
                    selections: self.selection_set()?,
                }),
                Tok::Name(n) if matches!(n.as_str(), "query" | "mutation" | "subscription") => {
                    Definition::Operation(self.operation()?)
                }
                Tok::Name(n) if n == "fragment" => Definition::Fragment(self.fragment()?),
                Tok::Str(_)
                    if matches!(self.peek_at(1), Tok::Name(n)
                        if matches!(n.as_str(), "query" | "mutation" | "subscription" | "fragment")) =>
                {
                    self.description();
                    continue;
                }
                Tok::Name(n) => {
                    return Err(located(
                        self.source,
                        self.position(),
                        &format!(
                            "{n:?} starts no operation or fragment, the only definitions a \
                             graphql request may hold"
                        ),
                    ))
                }
                _ => return Err(self.unexpected("an operation or a fragment")),
            };
            definitions.push(definition);
        }
    }

    fn operation(&mut self) -> Result<Operation, RequestError> {
        let kind = match self.name("an operation type")?.as_str() {
            "query" => OperationKind::Query,
            "mutation" => OperationKind::Mutation,
            _ => OperationKind::Subscription,
        };
        let name = match self.peek() {
            Tok::Name(_) => Some(self.name("an operation name")?),
            _ => None,
        };
        let mut variables = Vec::new();
        if self.eat_punct('(') {
            loop {
                variables.push(self.variable_definition()?);
                if self.eat_punct(')') {
                    break;
                }
            }
        }
        self.directives(false)?;
        Ok(Operation {
            kind,
            name,
            variables,
            selections: self.selection_set()?,
        })
    }

    fn variable_definition(&mut self) -> Result<VariableDefinition, RequestError> {
        self.description();
        let at = self.position();
        self.expect_punct('$')?;
        let name = self.name("a variable name")?;
        self.expect_punct(':')?;
        self.type_reference()?;
        let default = if self.eat_punct('=') {
            Some(self.value(true)?)
        } else {
            None
        };
        self.directives(true)?;
        Ok(VariableDefinition { name, default, at })
    }

    fn type_reference(&mut self) -> Result<(), RequestError> {
        if self.eat_punct('[') {
            self.enter()?;
            self.type_reference()?;
            self.expect_punct(']')?;
            self.leave();
        } else {
            self.name("a type")?;
        }
        self.eat_punct('!');
        Ok(())
    }

    /// Directives are read and set aside (MLflow knows only `@component`).
    fn directives(&mut self, constant: bool) -> Result<(), RequestError> {
        while self.eat_punct('@') {
            self.name("a directive name")?;
            if self.is_punct('(') {
                self.arguments(constant)?;
            }
        }
        Ok(())
    }

    fn arguments(&mut self, constant: bool) -> Result<Vec<Argument>, RequestError> {
        self.expect_punct('(')?;
        let mut arguments = Vec::new();
        loop {
            let at = self.position();
            let name = self.name("an argument name")?;
            self.expect_punct(':')?;
            let value = self.value(constant)?;
            arguments.push(Argument { name, value, at });
            if self.eat_punct(')') {
                return Ok(arguments);
            }
        }
    }

    fn selection_set(&mut self) -> Result<Vec<Selection>, RequestError> {
        self.enter()?;
        self.expect_punct('{')?;
        let mut selections = Vec::new();
        loop {
            selections.push(self.selection()?);
            if self.eat_punct('}') {
                self.leave();
                return Ok(selections);
            }
        }
    }

    fn selection(&mut self) -> Result<Selection, RequestError> {
        if *self.peek() == Tok::Spread {
            let at = self.position();
            self.at += 1;
            if matches!(self.peek(), Tok::Name(n) if n != "on") {
                let name = self.name("a fragment name")?;
                self.directives(false)?;
                return Ok(Selection::Spread { name, at });
            }
            if self.is_name("on") {
                self.at += 1;
                self.name("a type")?;
            }
            self.directives(false)?;
            return Ok(Selection::Inline(self.selection_set()?));
        }
        let first = self.name("a field or a fragment")?;
        let (alias, name) = if self.eat_punct(':') {
            (Some(first), self.name("a field name")?)
        } else {
            (None, first)
        };
        let arguments = if self.is_punct('(') {
            self.arguments(false)?
        } else {
            Vec::new()
        };
        self.directives(false)?;
        let selections = if self.is_punct('{') {
            self.selection_set()?
        } else {
            Vec::new()
        };
        Ok(Selection::Field(Field {
            alias,
            name,
            arguments,
            selections,
        }))
    }

    fn fragment(&mut self) -> Result<Fragment, RequestError> {
        let at = self.position();
        self.at += 1;
        if self.is_name("on") {
            return Err(self.unexpected("a fragment name"));
        }
        let name = self.name("a fragment name")?;
        if !self.is_name("on") {
            return Err(self.unexpected("'on' and a type"));
        }
        self.at += 1;
        self.name("a type")?;
        self.directives(false)?;
        Ok(Fragment {
            name,
            selections: self.selection_set()?,
            at,
        })
    }

    fn value(&mut self, constant: bool) -> Result<Value, RequestError> {
        let at = self.position();
        match self.bump() {
            Tok::Punct('$') if constant => Err(located(
                self.source,
                at,
                "a variable cannot appear in a default value or a directive of a variable",
            )),
            Tok::Punct('$') => Ok(Value::Variable {
                name: self.name("a variable name")?,
                at,
            }),
            Tok::Int(text) => Ok(Value::Int(text)),
            Tok::Float(text) => Ok(Value::Float(text)),
            Tok::Str(text) => Ok(Value::Str(text)),
            Tok::Name(name) => Ok(match name.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::Enum(name),
            }),
            Tok::Punct('[') => {
                self.enter()?;
                let mut items = Vec::new();
                while !self.eat_punct(']') {
                    items.push(self.value(constant)?);
                }
                self.leave();
                Ok(Value::List(items))
            }
            Tok::Punct('{') => {
                self.enter()?;
                let mut fields = Vec::new();
                while !self.eat_punct('}') {
                    let field_at = self.position();
                    let name = self.name("an input field name")?;
                    self.expect_punct(':')?;
                    fields.push((name, self.value(constant)?, field_at));
                }
                self.leave();
                Ok(Value::Object(fields))
            }
            other => Err(located(
                self.source,
                at,
                &format!("expected a value, found {}", describe(&other)),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------
// What the operation needs

/// A root field the filter checks: where its ids are and what they name.
struct RootField {
    /// The input's fields, snake_case (read in GraphQL's camelCase, and in snake_case
    /// too, which MLflow refuses), and whether they are lists.
    fields: &'static [&'static str],
    repeated: bool,
    /// For messages: `input.runId (or input.runUuid)`.
    label: &'static str,
    target: fn(&str) -> Target,
}

fn experiment(id: &str) -> Target {
    Target::Experiment { id: id.into() }
}

fn run(id: &str) -> Target {
    Target::Run { id: id.into() }
}

fn root_field(name: &str) -> Option<RootField> {
    Some(match name {
        "mlflowGetExperiment" => RootField {
            fields: &["experiment_id"],
            repeated: false,
            label: "input.experimentId",
            target: experiment,
        },
        "mlflowGetRun" | "mlflowListArtifacts" => RootField {
            fields: &["run_id", "run_uuid"],
            repeated: false,
            label: "input.runId (or input.runUuid)",
            target: run,
        },
        "mlflowGetMetricHistoryBulkInterval" => RootField {
            fields: &["run_ids"],
            repeated: true,
            label: "input.runIds",
            target: run,
        },
        "mlflowSearchRuns" => RootField {
            fields: &["experiment_ids"],
            repeated: true,
            label: "input.experimentIds",
            target: experiment,
        },
        _ => return None,
    })
}

struct Walk<'d> {
    source: &'d [char],
    fragments: HashMap<&'d str, &'d Fragment>,
    variables: &'d Map<String, Json>,
    /// The operation's variables and their defaults.
    declared: HashMap<&'d str, Option<&'d Value>>,
    selections: usize,
    needs: Vec<Requirement>,
    /// Why the operation is open to admins only (the first reason found).
    refusal: Option<String>,
    model_versions: bool,
}

impl<'d> Walk<'d> {
    fn refuse(&mut self, why: String) {
        self.refusal.get_or_insert(why);
    }

    fn need(&mut self, requirement: Requirement) {
        if !self.needs.contains(&requirement) {
            self.needs.push(requirement);
        }
    }

    /// The fields of a selection set, inline fragments and fragment spreads looked
    /// through (they select at the same level).
    fn fields(
        &mut self,
        selections: &'d [Selection],
        depth: usize,
    ) -> Result<Vec<&'d Field>, RequestError> {
        let mut out = Vec::new();
        self.collect(selections, depth, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    fn collect(
        &mut self,
        selections: &'d [Selection],
        depth: usize,
        spreading: &mut Vec<&'d str>,
        out: &mut Vec<&'d Field>,
    ) -> Result<(), RequestError> {
        if depth > MAX_DEPTH {
            return Err(bad(format!(
                "the graphql query nests deeper than {MAX_DEPTH} levels once its fragments are \
                 expanded, more than the filter reads"
            )));
        }
        for selection in selections {
            self.selections += 1;
            if self.selections > MAX_SELECTIONS {
                return Err(bad(format!(
                    "the graphql query selects more than {MAX_SELECTIONS} fields and fragments \
                     once its fragments are expanded, more than the filter reads"
                )));
            }
            match selection {
                Selection::Field(field) => out.push(field),
                Selection::Inline(inner) => self.collect(inner, depth + 1, spreading, out)?,
                Selection::Spread { name, at } => {
                    let Some(fragment) = self.fragments.get(name.as_str()).copied() else {
                        return Err(located(
                            self.source,
                            *at,
                            &format!("the fragment {name:?} is not defined"),
                        ));
                    };
                    if spreading.contains(&name.as_str()) {
                        return Err(located(
                            self.source,
                            *at,
                            &format!("the fragment {name:?} spreads itself"),
                        ));
                    }
                    spreading.push(name.as_str());
                    self.collect(&fragment.selections, depth + 1, spreading, out)?;
                    spreading.pop();
                }
            }
        }
        Ok(())
    }

    fn operation(&mut self, operation: &'d Operation) -> Result<(), RequestError> {
        for field in self.fields(&operation.selections, 1)? {
            self.root(field)?;
            if field.key() == MODEL_VERSIONS {
                self.posing_as_model_versions(field);
            }
            self.nested(&field.selections, 2)?;
        }
        Ok(())
    }

    fn root(&mut self, field: &'d Field) -> Result<(), RequestError> {
        let name = field.name.as_str();
        if name == "__typename" {
            return Ok(());
        }
        if name == "__schema" || name == "__type" {
            self.refuse(format!(
                "graphql introspection ({name}) is open to admins only"
            ));
            return Ok(());
        }
        let Some(spec) = root_field(name) else {
            self.refuse(format!(
                "the graphql field {name:?} is open to admins only for now"
            ));
            return Ok(());
        };
        let ids = match self.input(field)? {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Object(input)) => ids(&input, &spec)?,
            Some(other) => {
                return Err(bad(format!(
                    "the input of the graphql field {name:?} must be an object, not {}",
                    json_kind(&other)
                )))
            }
        };
        if ids.is_empty() {
            self.refuse(format!(
                "the graphql field {name:?} names nothing in {}: open to admins only",
                spec.label
            ));
        }
        for id in ids {
            self.need(Requirement::new((spec.target)(&id), Capability::Read));
        }
        Ok(())
    }

    /// The value of the field's `input` argument, its variables resolved.
    fn input(&self, field: &'d Field) -> Result<Option<Json>, RequestError> {
        let mut input = None;
        for argument in &field.arguments {
            if argument.name != "input" {
                return Err(located(
                    self.source,
                    argument.at,
                    &format!(
                        "the field {:?} takes only the argument \"input\", not {:?}",
                        field.name, argument.name
                    ),
                ));
            }
            if input.is_some() {
                return Err(located(
                    self.source,
                    argument.at,
                    &format!("the field {:?} gives \"input\" twice", field.name),
                ));
            }
            input = Some(&argument.value);
        }
        input.map(|value| self.resolve(value)).transpose()
    }

    fn resolve(&self, value: &'d Value) -> Result<Json, RequestError> {
        Ok(match value {
            Value::Variable { name, at } => return self.variable(name, *at),
            Value::Int(text) => integer(text),
            Value::Float(text) => float(text),
            Value::Str(text) | Value::Enum(text) => Json::String(text.clone()),
            Value::Bool(b) => Json::Bool(*b),
            Value::Null => Json::Null,
            Value::List(items) => Json::Array(
                items
                    .iter()
                    .map(|item| self.resolve(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => {
                let mut object = Map::new();
                for (name, value, at) in fields {
                    if object.contains_key(name) {
                        return Err(located(
                            self.source,
                            *at,
                            &format!("an input object gives the field {name:?} twice"),
                        ));
                    }
                    object.insert(name.clone(), self.resolve(value)?);
                }
                Json::Object(object)
            }
        })
    }

    fn variable(&self, name: &str, at: usize) -> Result<Json, RequestError> {
        let Some(default) = self.declared.get(name) else {
            return Err(located(
                self.source,
                at,
                &format!("the variable ${name} is not declared by the operation"),
            ));
        };
        if let Some(given) = self.variables.get(name) {
            return Ok(given.clone());
        }
        match default {
            Some(default) => self.resolve(default),
            None => Err(bad(format!(
                "the graphql variable ${name} is used but not given in \"variables\" (and has \
                 no default)"
            ))),
        }
    }

    fn posing_as_model_versions(&mut self, field: &Field) {
        self.refuse(format!(
            "the graphql field {:?} is renamed \"modelVersions\", whose answers the filter \
             filters: open to admins only",
            field.name
        ));
    }

    /// Below the root: where `modelVersions` is selected, and that it and its `name`
    /// are what the policy service will take them for.
    fn nested(&mut self, selections: &'d [Selection], depth: usize) -> Result<(), RequestError> {
        if selections.is_empty() {
            return Ok(());
        }
        for field in self.fields(selections, depth)? {
            let key = field.key();
            if field.name == MODEL_VERSIONS {
                self.model_versions = true;
                if key != MODEL_VERSIONS {
                    self.refuse(format!(
                        "the graphql field modelVersions is renamed {key:?}: the filter finds the \
                         model versions it must filter by their field name, so renaming it is \
                         open to admins only"
                    ));
                }
                let inner = self.fields(&field.selections, depth + 1)?;
                let named = inner.iter().any(|f| f.name == NAME && f.key() == NAME);
                let posing = inner.iter().find(|f| f.name != NAME && f.key() == NAME);
                if let Some(posing) = posing {
                    self.refuse(format!(
                        "the graphql field {:?} is renamed \"name\" inside modelVersions, where \
                         the filter reads the registered model's name: open to admins only",
                        posing.name
                    ));
                } else if !named {
                    self.refuse(String::from(
                        "modelVersions must select the field name (not renamed) for the filter \
                         to judge each version by its registered model: without it, open to \
                         admins only",
                    ));
                }
            } else if key == MODEL_VERSIONS {
                self.posing_as_model_versions(field);
            }
            self.nested(&field.selections, depth + 1)?;
        }
        Ok(())
    }
}

/// An integer literal as JSON (ids are read as their decimal string; MLflow itself
/// refuses a number where it takes a string).
fn integer(text: &str) -> Json {
    if let Ok(n) = text.parse::<i64>() {
        return Json::from(n);
    }
    if let Ok(n) = text.parse::<u64>() {
        return Json::from(n);
    }
    float(text)
}

fn float(text: &str) -> Json {
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Json::Null, Json::Number)
}

/// Every non-empty id the input names, in every spelling.
fn ids(input: &Map<String, Json>, spec: &RootField) -> Result<Vec<String>, RequestError> {
    let mut out: Vec<String> = Vec::new();
    for snake in spec.fields {
        let mut keys = vec![camel(snake)];
        if !keys.iter().any(|k| k == snake) {
            keys.push((*snake).to_string());
        }
        for key in keys {
            if let Some(value) = input.get(&key) {
                for id in scalars(value, &key, spec.repeated)? {
                    if !id.is_empty() && !out.contains(&id) {
                        out.push(id);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Reads the document and decides the operation the request runs.
fn analyze(
    document: &str,
    variables: &Map<String, Json>,
    operation_name: Option<&str>,
) -> Result<(Access, After), RequestError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(bad(format!(
            "the graphql query is {} bytes long, more than the {MAX_DOCUMENT_BYTES} the filter reads",
            document.len()
        )));
    }
    let source: Vec<char> = document.chars().collect();
    let tokens = Lexer::new(&source).run()?;
    let definitions = Parser::new(&source, tokens).document()?;

    let mut fragments: HashMap<&str, &Fragment> = HashMap::new();
    let mut operations: Vec<&Operation> = Vec::new();
    for definition in &definitions {
        match definition {
            Definition::Fragment(fragment) => {
                if fragments.insert(fragment.name.as_str(), fragment).is_some() {
                    return Err(located(
                        &source,
                        fragment.at,
                        &format!("the fragment {:?} is defined twice", fragment.name),
                    ));
                }
            }
            Definition::Operation(operation) => operations.push(operation),
        }
    }
    let operation = pick_operation(&operations, operation_name)?;
    match operation.kind {
        OperationKind::Query => {}
        OperationKind::Mutation => {
            return Ok((
                Access::AdminOnly {
                    why: String::from("graphql mutations are open to admins only"),
                },
                After::Nothing,
            ))
        }
        OperationKind::Subscription => {
            return Ok((
                Access::AdminOnly {
                    why: String::from("graphql subscriptions are open to admins only"),
                },
                After::Nothing,
            ))
        }
    }
    let mut declared = HashMap::new();
    for variable in &operation.variables {
        if declared
            .insert(variable.name.as_str(), variable.default.as_ref())
            .is_some()
        {
            return Err(located(
                &source,
                variable.at,
                &format!("the variable ${} is declared twice", variable.name),
            ));
        }
    }
    let mut walk = Walk {
        source: &source,
        fragments,
        variables,
        declared,
        selections: 0,
        needs: Vec::new(),
        refusal: None,
        model_versions: false,
    };
    walk.operation(operation)?;
    let after = if walk.model_versions {
        After::Filter(Listing::GraphqlModelVersions)
    } else {
        After::Nothing
    };
    let access = match walk.refusal {
        Some(why) => Access::AdminOnly { why },
        None => Access::Resources(walk.needs),
    };
    Ok((access, after))
}

/// The operation graphql-core runs: the only one, or the one `operationName` names.
fn pick_operation<'d>(
    operations: &[&'d Operation],
    operation_name: Option<&str>,
) -> Result<&'d Operation, RequestError> {
    match operation_name {
        None => match operations {
            [one] => Ok(one),
            [] => Err(bad("the graphql query has no operation")),
            _ => Err(bad(
                "the graphql query has several operations and no \"operationName\" to pick one",
            )),
        },
        Some(wanted) => {
            let named: Vec<&'d Operation> = operations
                .iter()
                .copied()
                .filter(|o| o.name.as_deref() == Some(wanted))
                .collect();
            match named.as_slice() {
                [one] => Ok(one),
                [] => Err(bad(format!(
                    "the graphql query has no operation named {wanted:?} (its \"operationName\")"
                ))),
                _ => Err(bad(format!(
                    "the graphql query has several operations named {wanted:?}"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{plan, route, Plan, RouteClass};
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    /// As MLflow 3.17.2's UI bundle has it.
    const UI_GET_RUN: &str = r#"query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
        mlflowGetRun(input: $data) {
          apiError {
            helpUrl
            code
            message
          }
          run {
            info {
              runName
              status
              runUuid
              experimentId
              artifactUri
              endTime
              lifecycleStage
              startTime
              userId
            }
            experiment {
              experimentId
              name
              tags {
                key
                value
              }
              artifactLocation
              lifecycleStage
              lastUpdateTime
            }
            modelVersions {
              status
              version
              name
              source
            }
            data {
              metrics {
                key
                value
                step
                timestamp
              }
              params {
                key
                value
              }
              tags {
                key
                value
              }
            }
            inputs {
              datasetInputs {
                dataset {
                  digest
                  name
                  profile
                  schema
                  source
                  sourceType
                }
                tags {
                  key
                  value
                }
              }
              modelInputs {
                modelId
              }
            }
            outputs {
              modelOutputs {
                modelId
                step
              }
            }
          }
        }
      }
    "#;

    /// As MLflow 3.17.2's UI bundle has it.
    const UI_METRIC_HISTORY: &str = r#"query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput!)
      @component(name: "MLflow.ExperimentRunTracking") {
        mlflowGetMetricHistoryBulkInterval(input: $data) {
          __typename
          metrics {
            timestamp
            step
            runId
            key
            value
          }
          apiError {
            code
            message
          }
        }
      }
    "#;

    /// As MLflow 3.17.2's UI bundle has it.
    const UI_GET_EXPERIMENT: &str = r#"query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!) @component(name: "MLflow.ExperimentRunTracking") {
        mlflowGetExperiment(input: $input) {
          apiError {
            code
            message
          }
          experiment {
            artifactLocation
            creationTime
            effectiveTraceArchivalRetention
            experimentId
            lastUpdateTime
            lifecycleStage
            name
            tags {
              key
              value
            }
          }
        }
      }
    "#;

    /// As MLflow 3.17.2's UI bundle has it.
    const UI_SEARCH_RUNS: &str = r#"query SearchRuns($data: MlflowSearchRunsInput!) {
        mlflowSearchRuns(input: $data) {
          apiError {
            helpUrl
            code
            message
          }
          runs {
            info {
              runName
              status
              runUuid
              experimentId
              artifactUri
              endTime
              lifecycleStage
              startTime
              userId
            }
            experiment {
              experimentId
              name
              tags {
                key
                value
              }
              artifactLocation
              lifecycleStage
              lastUpdateTime
            }
            data {
              metrics {
                key
                value
                step
                timestamp
              }
              params {
                key
                value
              }
              tags {
                key
                value
              }
            }
            inputs {
              datasetInputs {
                dataset {
                  digest
                  name
                  profile
                  schema
                  source
                  sourceType
                }
                tags {
                  key
                  value
                }
              }
              modelInputs {
                modelId
              }
            }
            outputs {
              modelOutputs {
                modelId
                step
              }
            }
            modelVersions {
              version
              name
              creationTimestamp
              status
              source
            }
          }
        }
      }
    "#;

    fn go(method: &str, path: &str, body: Option<&str>) -> Result<Plan, RequestError> {
        let routed = route(method, path);
        plan(&routed, method, path, body.map(str::as_bytes))
    }

    fn post(body: &Json) -> Result<Plan, RequestError> {
        go("POST", "/graphql", Some(&body.to_string()))
    }

    fn query(document: &str, variables: Json) -> Json {
        json!({"query": document, "variables": variables})
    }

    /// The requirements and what follows, for a query that must be a resource check.
    fn needs(body: &Json) -> (Vec<Requirement>, After) {
        match post(body) {
            Ok(Plan {
                access: Access::Resources(needs),
                after,
                ..
            }) => (needs, after),
            other => panic!("{body}: expected resources, got {other:?}"),
        }
    }

    fn admin(body: &Json) -> String {
        match post(body) {
            Ok(Plan {
                access: Access::AdminOnly { why },
                ..
            }) => {
                assert!(lower_case(&why), "{why}");
                assert!(why.contains("admins only"), "{why}");
                why
            }
            other => panic!("{body}: expected admins only, got {other:?}"),
        }
    }

    fn refused(body: &Json) -> String {
        match post(body) {
            Err(e) => {
                assert!(lower_case(&e.message), "{}", e.message);
                e.message
            }
            Ok(p) => panic!("{body}: expected a 400, got {p:?}"),
        }
    }

    fn lower_case(text: &str) -> bool {
        text.chars().next().is_some_and(|c| !c.is_uppercase())
    }

    fn run_read(id: &str) -> Requirement {
        Requirement::new(Target::Run { id: id.into() }, Capability::Read)
    }

    fn exp_read(id: &str) -> Requirement {
        Requirement::new(Target::Experiment { id: id.into() }, Capability::Read)
    }

    const FILTERED: After = After::Filter(Listing::GraphqlModelVersions);

    // ---- the UI's four queries -------------------------------------------------------

    #[test]
    fn graphql_is_a_resource_route_that_reads_its_body() {
        for method in ["GET", "POST", "HEAD"] {
            let routed = route(method, "/graphql");
            assert_eq!(routed.class(), RouteClass::Resources, "{method}");
            assert!(routed.reads_body(), "{method}");
            assert_eq!(routed.name, "graphql");
        }
        // Other methods and paths below it are not MLflow routes.
        for (method, path) in [("PUT", "/graphql"), ("POST", "/graphql/x")] {
            assert_eq!(route(method, path).class(), RouteClass::Unknown, "{path}");
        }
        assert_eq!(
            route("OPTIONS", "/graphql").class(),
            RouteClass::Authenticated
        );
    }

    #[test]
    fn the_ui_get_run_needs_read_on_the_run_and_filters_its_model_versions() {
        let body = json!({
            "operationName": "GetRun",
            "variables": {"data": {"runId": "r1"}},
            "query": UI_GET_RUN,
        });
        assert_eq!(needs(&body), (vec![run_read("r1")], FILTERED));
        // The deprecated spelling, and both (MLflow takes the first set: both must pass).
        let body = query(UI_GET_RUN, json!({"data": {"runUuid": "r2"}}));
        assert_eq!(needs(&body).0, vec![run_read("r2")]);
        let body = query(
            UI_GET_RUN,
            json!({"data": {"runId": "r1", "runUuid": "r2"}}),
        );
        assert_eq!(needs(&body).0, vec![run_read("r1"), run_read("r2")]);
    }

    #[test]
    fn the_ui_metric_history_needs_read_on_every_run() {
        let variables = json!({"data": {
            "runIds": ["r1", "r2", "r1"], "metricKey": "loss", "maxResults": 320,
            "startStep": 0, "endStep": 100,
        }});
        let body = json!({
            "operationName": "GetMetricHistoryBulkInterval",
            "variables": variables,
            "query": UI_METRIC_HISTORY,
        });
        assert_eq!(
            needs(&body),
            (vec![run_read("r1"), run_read("r2")], After::Nothing)
        );
    }

    #[test]
    fn the_ui_get_experiment_needs_read_on_it() {
        let body = json!({
            "operationName": "MlflowGetExperimentQuery",
            "variables": {"input": {"experimentId": "7"}},
            "query": UI_GET_EXPERIMENT,
        });
        assert_eq!(needs(&body), (vec![exp_read("7")], After::Nothing));
    }

    #[test]
    fn the_ui_search_runs_needs_read_on_every_experiment_and_filters_model_versions() {
        let body = json!({
            "operationName": "SearchRuns",
            "variables": {"data": {"filter": "attributes.run_id = 'r1'", "experimentIds": ["1", "2"]}},
            "query": UI_SEARCH_RUNS,
        });
        assert_eq!(needs(&body), (vec![exp_read("1"), exp_read("2")], FILTERED));
        // No experiment: MLflow would search nothing; not a pass for non-admins.
        for variables in [
            json!({"data": {"experimentIds": []}}),
            json!({"data": {"filter": "x"}}),
            json!({"data": {"experimentIds": ["", null]}}),
        ] {
            let why = admin(&query(UI_SEARCH_RUNS, variables));
            assert!(
                why.contains("mlflowSearchRuns") && why.contains("input.experimentIds"),
                "{why}"
            );
        }
    }

    #[test]
    fn apollo_typenames_and_other_body_keys_change_nothing() {
        let document = "query GetRun($data: MlflowGetRunInput!) { __typename mlflowGetRun(input: $data) \
                        { __typename run { __typename modelVersions { name version __typename } } } }";
        let body = json!({
            "query": document, "variables": {"data": {"runId": "r1"}},
            "operationName": "GetRun", "extensions": {"persistedQuery": null},
        });
        assert_eq!(needs(&body), (vec![run_read("r1")], FILTERED));
        assert_eq!(
            needs(&query("{ __typename }", Json::Null)),
            (vec![], After::Nothing)
        );
    }

    // ---- root fields ------------------------------------------------------------------

    #[test]
    fn aliases_and_several_root_fields_each_need_theirs() {
        let document = r#"{
            a: mlflowGetRun(input: {runId: "r1"}) { run { info { runUuid } } }
            b: mlflowGetRun(input: {runId: "r2"}) { run { info { runUuid } } }
            mlflowGetExperiment: mlflowGetExperiment(input: {experimentId: "4"}) { experiment { name } }
            files: mlflowListArtifacts(input: {runUuid: "r3", path: "model"}) { files { path } }
            mlflowSearchRuns(input: {experimentIds: ["5"]}) { runs { info { runUuid } } }
            t: __typename
        }"#;
        assert_eq!(
            needs(&query(document, Json::Null)),
            (
                vec![
                    run_read("r1"),
                    run_read("r2"),
                    exp_read("4"),
                    run_read("r3"),
                    exp_read("5")
                ],
                After::Nothing
            )
        );
        // An alias cannot pass one field for another.
        let why = admin(&query(
            r#"{ mlflowGetRun: mlflowSearchModelVersions(input: {filter: "name='m'"}) { modelVersions { name } } }"#,
            Json::Null,
        ));
        assert!(why.contains("\"mlflowSearchModelVersions\""), "{why}");
    }

    #[test]
    fn mutations_subscriptions_and_introspection_are_for_admins() {
        let why = admin(&query(
            r#"mutation M { mlflowSearchRuns(input: {experimentIds: ["1"]}) { runs { info { runUuid } } } }"#,
            Json::Null,
        ));
        assert!(why.contains("mutations"), "{why}");
        let why = admin(&query("subscription S { x }", Json::Null));
        assert!(why.contains("subscriptions"), "{why}");
        for document in [
            "{ __schema { types { name } } }",
            r#"query { __typename __type(name: "MlflowRun") { fields { name } } }"#,
            r#"{ mlflowGetRun(input: {runId: "r1"}) { run { info { runUuid } } } ... on Query { __schema { queryType { name } } } }"#,
        ] {
            let why = admin(&query(document, Json::Null));
            assert!(why.contains("introspection"), "{why}");
        }
    }

    #[test]
    fn unknown_root_fields_are_for_admins_naming_them() {
        for (document, field) in [
            (
                r#"{ mlflowSearchModelVersions(input: {filter: "run_id='r1'"}) { modelVersions { name } } }"#,
                "mlflowSearchModelVersions",
            ),
            (r#"{ test(inputString: "x") { output } }"#, "test"),
            (
                r#"{ mlflowGetExperiment(input: {experimentId: "1"}) { experiment { name } } mlflowSearchDatasets(input: {experimentIds: ["1"]}) { datasetSummaries { name } } }"#,
                "mlflowSearchDatasets",
            ),
        ] {
            let why = admin(&query(document, Json::Null));
            assert!(why.contains(&format!("{field:?}")), "{why}");
        }
    }

    #[test]
    fn fields_naming_no_id_are_for_admins() {
        for (document, label) in [
            (
                "{ mlflowGetRun { run { info { runUuid } } } }",
                "input.runId",
            ),
            (
                "{ mlflowGetRun(input: {}) { run { info { runUuid } } } }",
                "input.runId",
            ),
            (
                r#"{ mlflowGetRun(input: {runId: ""}) { run { info { runUuid } } } }"#,
                "input.runId",
            ),
            (
                "{ mlflowGetExperiment(input: null) { experiment { name } } }",
                "input.experimentId",
            ),
            (
                "{ mlflowGetMetricHistoryBulkInterval(input: {runIds: []}) { metrics { key } } }",
                "input.runIds",
            ),
        ] {
            let why = admin(&query(document, Json::Null));
            assert!(why.contains(label), "{why}");
        }
    }

    // ---- fragments ----------------------------------------------------------------------

    #[test]
    fn fragments_cannot_hide_a_root_field() {
        let variables = json!({"data": {"runId": "mine"}});
        // A named fragment spread at the root asks for another run.
        let document = r#"
            query GetRun($data: MlflowGetRunInput!) {
                mlflowGetRun(input: $data) { run { info { runUuid } } }
                ...Theirs
            }
            fragment Theirs on Query {
                other: mlflowGetRun(input: {runId: "theirs"}) { run { info { runUuid } } }
            }"#;
        assert_eq!(
            needs(&query(document, variables.clone())).0,
            vec![run_read("mine"), run_read("theirs")]
        );
        // Through an inline fragment, nested inline fragments and a chain of fragments.
        let document = r#"
            query GetRun($data: MlflowGetRunInput!) {
                mlflowGetRun(input: $data) { run { info { runUuid } } }
                ... on Query { ... @component(name: "x") { ...A } }
            }
            fragment A on Query { ...B }
            fragment B on Query { mlflowGetRun(input: {runUuid: "theirs"}) { run { info { runUuid } } } }"#;
        assert_eq!(
            needs(&query(document, variables.clone())).0,
            vec![run_read("mine"), run_read("theirs")]
        );
        // A fragment spread twice at the root is fine; one that spreads itself is not.
        let document = r#"{ ...A ...A } fragment A on Query { mlflowGetExperiment(input: {experimentId: "1"}) { experiment { name } } }"#;
        assert_eq!(needs(&query(document, Json::Null)).0, vec![exp_read("1")]);
        let e = refused(&query(
            "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
            Json::Null,
        ));
        assert!(e.contains("\"A\" spreads itself"), "{e}");
        let e = refused(&query("{ ...Nowhere }", Json::Null));
        assert!(e.contains("\"Nowhere\" is not defined"), "{e}");
        let e = refused(&query(
            "{ ...A } fragment A on Query { __typename } fragment A on Query { __typename }",
            Json::Null,
        ));
        assert!(e.contains("defined twice"), "{e}");
        // A fragment that only another operation uses is not run.
        let document = r#"
            query Mine { mlflowGetExperiment(input: {experimentId: "1"}) { experiment { name } } }
            query Other { ...Theirs }
            fragment Theirs on Query { mlflowGetExperiment(input: {experimentId: "2"}) { experiment { name } } }"#;
        let body = json!({"query": document, "operationName": "Mine"});
        assert_eq!(needs(&body).0, vec![exp_read("1")]);
        let body = json!({"query": document, "operationName": "Other"});
        assert_eq!(needs(&body).0, vec![exp_read("2")]);
    }

    #[test]
    fn fragment_fan_out_is_bounded() {
        // Each fragment spreads the next twice: 2^20 fields once expanded.
        let mut document = String::from("{ ...F0 }\n");
        for i in 0..20 {
            document.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        document.push_str("fragment F20 on Query { __typename }\n");
        let e = refused(&query(&document, Json::Null));
        assert!(e.contains(&format!("more than {MAX_SELECTIONS}")), "{e}");
        // A fragment that nests itself deeper and deeper.
        let e = refused(&query(
            "{ mlflowGetRun(input: {runId: \"r\"}) { ...R } } fragment R on MlflowGetRunResponse { run { ...R } }",
            Json::Null,
        ));
        assert!(e.contains(&format!("deeper than {MAX_DEPTH}")), "{e}");
    }

    // ---- modelVersions --------------------------------------------------------------------

    #[test]
    fn model_versions_anywhere_are_filtered_and_must_say_what_they_are() {
        // Through a fragment on the run.
        let document = r#"query Q($d: MlflowGetRunInput) { mlflowGetRun(input: $d) { run { ...Versions } } }
            fragment Versions on MlflowRunExtension { info { runUuid } ... on MlflowRunExtension { modelVersions { name version } } }"#;
        assert_eq!(
            needs(&query(document, json!({"d": {"runId": "r1"}}))),
            (vec![run_read("r1")], FILTERED)
        );
        for (selection, word) in [
            ("mv: modelVersions { name }", "renamed \"mv\""),
            (
                "modelVersions: data { tags { key } }",
                "\"data\" is renamed",
            ),
            ("modelVersions { version }", "must select the field name"),
            (
                "modelVersions { name: source version }",
                "\"source\" is renamed",
            ),
            (
                "modelVersions { name ... on MlflowModelVersion { name: runId } }",
                "\"runId\" is renamed",
            ),
            (
                "modelVersions { nm: name version }",
                "must select the field name",
            ),
        ] {
            let document = format!(
                r#"{{ mlflowGetRun(input: {{runId: "r1"}}) {{ run {{ {selection} }} }} }}"#
            );
            let why = admin(&query(&document, Json::Null));
            assert!(why.contains(word), "{selection}: {why}");
        }
        // At the root too.
        let why = admin(&query("{ modelVersions: __typename }", Json::Null));
        assert!(why.contains("\"__typename\" is renamed"), "{why}");
        // `name` elsewhere may be renamed, and `name` may be asked twice.
        let document = r#"{ mlflowGetRun(input: {runId: "r1"}) { run { experiment { title: name }
            modelVersions { name name version } } } }"#;
        assert_eq!(
            needs(&query(document, Json::Null)),
            (vec![run_read("r1")], FILTERED)
        );
    }

    // ---- arguments ---------------------------------------------------------------------------

    #[test]
    fn inline_literal_arguments_are_read_as_graphql_reads_them() {
        let cases = [
            // Objects, lists, numbers (read as their decimal string), a single item for a list.
            (
                r#"{ mlflowSearchRuns(input: {experimentIds: ["1", 2], filter: "x", runViewType: ALL, maxResults: 10, orderBy: ["a"]}) { runs { info { runUuid } } } }"#,
                vec![exp_read("1"), exp_read("2")],
            ),
            (
                r#"{ mlflowGetMetricHistoryBulkInterval(input: {runIds: "r1", metricKey: "m", startStep: -1, endStep: 1.5e3}) { metrics { key } } }"#,
                vec![run_read("r1")],
            ),
            (
                r#"{ mlflowGetExperiment(input: {experimentId: 0}) { experiment { name } } }"#,
                vec![exp_read("0")],
            ),
            // Escapes as graphql-core decodes them.
            (
                r#"{ mlflowGetRun(input: {runId: "r\u0031\u{32}\/\uD83D\uDE00"}) { run { info { runUuid } } } }"#,
                vec![run_read("r12/\u{1F600}")],
            ),
            // A block string: its common indentation and blank first and last lines go.
            (
                "{ mlflowGetRun(input: {runId: \"\"\"\n    r9\n  \"\"\"}) { run { info { runUuid } } } }",
                vec![run_read("r9")],
            ),
            (
                "{ mlflowGetRun(input: {runId: \"\"\"  a\n    b\n   c\\\"\"\"\"\"\"}) { run { info { runUuid } } } }",
                vec![run_read("  a\n b\nc\"\"\"")],
            ),
            (
                "{ mlflowGetRun(input: {runId: \"\"\"\r\n\t  x\r  \t y\n\"\"\"}) { run { info { runUuid } } } }",
                vec![run_read("x\n y")],
            ),
            (
                r#"{ mlflowGetRun(input: {runId: "\u{00000061}"}) { run { info { runUuid } } } }"#,
                vec![run_read("a")],
            ),
            // Variables inside literals, commas, comments, a BOM.
            (
                "\u{feff}query Q($a: String, $b: String = \"r5\") { # the run\n mlflowGetMetricHistoryBulkInterval(input: {runIds: [$a, $b,],}) { metrics { key } } }",
                vec![run_read("r4"), run_read("r5")],
            ),
        ];
        for (document, expected) in cases {
            let body = query(document, json!({"a": "r4"}));
            assert_eq!(needs(&body).0, expected, "{document}");
        }
    }

    #[test]
    fn variables_are_resolved_and_a_missing_one_is_refused() {
        // A default applies when the variable is not given; a given null is null.
        let document = r#"query Q($data: MlflowSearchRunsInput = {experimentIds: ["9"]}) {
            mlflowSearchRuns(input: $data) { runs { info { runUuid } } } }"#;
        assert_eq!(needs(&query(document, json!({}))).0, vec![exp_read("9")]);
        assert_eq!(
            needs(&query(document, json!({"data": {"experimentIds": ["3"]}}))).0,
            vec![exp_read("3")]
        );
        admin(&query(document, json!({"data": null})));

        let e = refused(&query(UI_GET_RUN, json!({})));
        assert!(e.contains("$data") && e.contains("not given"), "{e}");
        let e = refused(&query(UI_GET_RUN, Json::Null));
        assert!(e.contains("$data"), "{e}");
        let e = refused(&query(
            r#"{ mlflowGetRun(input: $data) { run { info { runUuid } } } }"#,
            json!({"data": {"runId": "r1"}}),
        ));
        assert!(e.contains("$data is not declared"), "{e}");
        let e = refused(&query(
            "query Q($a: String, $a: String) { __typename }",
            json!({}),
        ));
        assert!(e.contains("declared twice"), "{e}");
        // Values the input cannot hold.
        let e = refused(&query(UI_GET_RUN, json!({"data": "r1"})));
        assert!(e.contains("must be an object, not a string"), "{e}");
        let e = refused(&query(UI_GET_RUN, json!({"data": {"runId": ["r1"]}})));
        assert!(e.contains("\"runId\""), "{e}");
        let e = refused(&query(UI_GET_RUN, json!({"data": {"runId": true}})));
        assert!(e.contains("\"runId\""), "{e}");
        let e = refused(&query(
            r#"{ mlflowGetRun(input: {runId: "a", runId: "b"}) { run { info { runUuid } } } }"#,
            Json::Null,
        ));
        assert!(e.contains("\"runId\" twice"), "{e}");
        let e = refused(&query(
            r#"{ mlflowGetRun(input: {runId: "a"}, runId: "b") { run { info { runUuid } } } }"#,
            Json::Null,
        ));
        assert!(e.contains("only the argument \"input\""), "{e}");
        // Both spellings are read (MLflow refuses the snake_case one).
        assert_eq!(
            needs(&query(
                UI_GET_RUN,
                json!({"data": {"runId": "a", "run_id": "b"}})
            ))
            .0,
            vec![run_read("a"), run_read("b")]
        );
    }

    #[test]
    fn the_operation_run_is_the_one_graphql_core_picks() {
        let document = r#"
            query Read { mlflowGetExperiment(input: {experimentId: "1"}) { experiment { name } } }
            mutation Write { mlflowSearchRuns(input: {experimentIds: ["2"]}) { runs { info { runUuid } } } }"#;
        assert_eq!(
            needs(&json!({"query": document, "operationName": "Read"})).0,
            vec![exp_read("1")]
        );
        admin(&json!({"query": document, "operationName": "Write"}));
        let e = refused(&json!({"query": document}));
        assert!(e.contains("several operations"), "{e}");
        let e = refused(&json!({"query": document, "operationName": "Nope"}));
        assert!(e.contains("no operation named \"Nope\""), "{e}");
        let e = refused(&json!({"query": "{ __typename }", "operationName": ""}));
        assert!(e.contains("no operation named \"\""), "{e}");
        // Descriptions (graphql-core 3.2.14 reads them on operations, fragments and
        // variables) are set aside.
        let document = r#""what" query Q("the run" $d: MlflowGetRunInput) { ...F }
            """block""" fragment F on Query { mlflowGetRun(input: $d) { run { info { runUuid } } } }"#;
        assert_eq!(
            needs(&query(document, json!({"d": {"runId": "r7"}}))).0,
            vec![run_read("r7")]
        );
        let e = refused(&json!({"query": "\"what\" { __typename }"}));
        assert!(e.contains("found a string"), "{e}");
        let e = refused(&json!({"query": "fragment A on Query { __typename }"}));
        assert!(e.contains("no operation"), "{e}");
    }

    // ---- malformed requests ------------------------------------------------------------------

    #[test]
    fn malformed_documents_are_refused_naming_where_and_what() {
        let cases: &[(&str, &str)] = &[
            (
                "{ mlflowGetRun(input: {runId: \"r1}) { run { info { runUuid } } } }",
                "line 1, column 31: unterminated string",
            ),
            (
                "{ a(x: \"one\ntwo\") }",
                "line 1, column 8: unterminated string",
            ),
            ("{ a(x: \"\"\"never) }", "unterminated block string"),
            (
                "{ mlflowGetRun(input: {runId: \"r1\"}) { run { info { runUuid } } }",
                "line 1, column 66: expected a field or a fragment, found the end of the query",
            ),
            (
                "{ __typename } }",
                "line 1, column 16: expected an operation or a fragment, found '}'",
            ),
            (
                "{ }",
                "line 1, column 3: expected a field or a fragment, found '}'",
            ),
            (
                "",
                "line 1, column 1: expected an operation or a fragment, found the end",
            ),
            (
                "  # only a comment\n",
                "line 2, column 1: expected an operation",
            ),
            ("{ a(x: 'y') }", "line 1, column 8: unexpected single quote"),
            ("{ a(x: \"\\q\") }", "invalid escape sequence \"\\\\q\""),
            ("{ a(x: \"\\uD800\") }", "invalid unicode escape sequence"),
            (
                "{ a(x: \"\\u{110000}\") }",
                "invalid unicode escape sequence",
            ),
            ("{ a(x: \"\\u{}\") }", "invalid unicode escape sequence"),
            (
                "{ a(x: \"\\u{000000061}\") }",
                "invalid unicode escape sequence",
            ),
            ("{ a(x: 012) }", "a digit after a leading 0"),
            ("{ a(x: 1.) }", "expected a digit"),
            ("{ a(x: 1a) }", "expected a digit, found 'a'"),
            ("{ a(x: -) }", "expected a digit"),
            ("{ a(x: ..) }", "unexpected character '.'"),
            ("{ a(x: ~) }", "unexpected character '~'"),
            (
                "{\r\n  a(x: $) }",
                "line 2, column 9: expected a variable name, found ')'",
            ),
            ("{ a(x: ) }", "expected a value, found ')'"),
            ("{ a() }", "expected an argument name, found ')'"),
            ("{ a(x: {y}) }", "expected ':', found '}'"),
            ("query Q($v: [String) { a }", "expected ']', found ')'"),
            (
                "query Q($v: String = $w) { a }",
                "a variable cannot appear in a default value",
            ),
            (
                "fragment on on Query { a }",
                "expected a fragment name, found the name \"on\"",
            ),
            (
                "fragment F Query { a }",
                "expected 'on' and a type, found the name \"Query\"",
            ),
            (
                "type Query { a: String }",
                "\"type\" starts no operation or fragment",
            ),
            (
                "\"described\" type Query { a: String }",
                "expected an operation or a fragment, found a string",
            ),
        ];
        for (document, needle) in cases {
            let e = refused(&query(document, Json::Null));
            assert!(
                e.starts_with("the graphql query is malformed at line ")
                    || !needle.contains("line"),
                "{document:?}: {e}"
            );
            assert!(
                e.contains(needle),
                "{document:?}: {e:?} should say {needle:?}"
            );
        }
    }

    #[test]
    fn the_work_is_bounded() {
        // Deep nesting, in selections, values and types.
        let deep = format!("{}{}", "{ a ".repeat(200), "}".repeat(200));
        let e = refused(&query(&deep, Json::Null));
        assert!(e.contains(&format!("deeper than {MAX_DEPTH}")), "{e}");
        let deep = format!(
            "{{ mlflowGetRun(input: {{runId: \"r\", x: {}1{}}}) {{ run {{ info {{ runUuid }} }} }} }}",
            "[".repeat(100),
            "]".repeat(100)
        );
        let e = refused(&query(&deep, Json::Null));
        assert!(e.contains(&format!("deeper than {MAX_DEPTH}")), "{e}");
        let deep = format!(
            "query Q($v: {}String{}) {{ a }}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(refused(&query(&deep, Json::Null)).contains("deeper than"));
        // Deep but within bounds is fine.
        let nested = format!(
            "{}{}",
            "{ a ".repeat(MAX_DEPTH - 1),
            "}".repeat(MAX_DEPTH - 1)
        );
        admin(&query(&nested, Json::Null));
        // Too many tokens, too many bytes.
        let many = format!("{{ {} }}", "a ".repeat(MAX_TOKENS));
        let e = refused(&query(&many, Json::Null));
        assert!(e.contains(&format!("more than {MAX_TOKENS} tokens")), "{e}");
        let long = format!("{{ __typename }} # {}", "x".repeat(MAX_DOCUMENT_BYTES));
        let e = refused(&query(&long, Json::Null));
        assert!(
            e.contains(&format!("the {MAX_DOCUMENT_BYTES} the filter reads")),
            "{e}"
        );
        // Many fields without fragments.
        let wide = format!("{{ {} }}", "__typename ".repeat(MAX_SELECTIONS + 1));
        let e = refused(&query(&wide, Json::Null));
        assert!(
            e.contains(&format!("more than {MAX_SELECTIONS} fields")),
            "{e}"
        );
    }

    #[test]
    fn malformed_requests_are_refused_naming_the_part() {
        let cases = [
            (json!({}), "gives no \"query\" in its JSON body"),
            (json!({"query": null}), "gives no \"query\""),
            (
                json!({"query": 5}),
                "\"query\" of the graphql request must be a string, not a number",
            ),
            (
                json!({"query": "{ __typename }", "variables": "{}"}),
                "\"variables\" of the graphql request must be a JSON object, not a string",
            ),
            (
                json!({"query": "{ __typename }", "operationName": 1}),
                "\"operationName\" of the graphql request must be a string",
            ),
        ];
        for (body, needle) in cases {
            let e = refused(&body);
            assert!(e.contains(needle), "{body}: {e}");
        }
        let e = go("POST", "/graphql", None).unwrap_err().message;
        assert!(e.contains("gives no \"query\""), "{e}");
        let e = go("POST", "/graphql", Some("{\"query\": "))
            .unwrap_err()
            .message;
        assert!(e.contains("not valid JSON"), "{e}");
    }

    // ---- GET ------------------------------------------------------------------------------------

    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn a_get_is_read_from_its_body_as_mlflow_reads_it_else_from_its_query_string() {
        let variables = json!({"data": {"runId": "r1"}}).to_string();
        let path = format!(
            "/graphql?query={}&variables={}&operationName=GetRun",
            encode(UI_GET_RUN),
            encode(&variables)
        );
        let plan = go("GET", &path, None).unwrap();
        assert_eq!(plan.access, Access::Resources(vec![run_read("r1")]));
        assert_eq!(plan.after, FILTERED);
        assert_eq!(go("HEAD", &path, None).unwrap(), plan);
        // `+` is a space in a query string.
        let path = "/graphql?query=query+%7B+mlflowGetExperiment(input:+%7BexperimentId:+%223%22%7D)+%7B+experiment+%7B+name+%7D+%7D+%7D";
        assert_eq!(
            go("GET", path, None).unwrap().access,
            Access::Resources(vec![exp_read("3")])
        );
        // A body, as MLflow reads it for a GET.
        let body =
            json!({"query": UI_GET_EXPERIMENT, "variables": {"input": {"experimentId": "8"}}})
                .to_string();
        assert_eq!(
            go("GET", "/graphql", Some(&body)).unwrap().access,
            Access::Resources(vec![exp_read("8")])
        );
        // Both: MLflow would run the body's; refused.
        let e = go(
            "GET",
            &format!("/graphql?query={}", encode("{ __typename }")),
            Some(&body),
        )
        .unwrap_err()
        .message;
        assert!(
            e.contains("both in its JSON body") && e.contains("query string"),
            "{e}"
        );
        // Neither, twice, or variables that are not an object.
        let e = go("GET", "/graphql", None).unwrap_err().message;
        assert!(
            e.contains("gives no \"query\", neither in a JSON body"),
            "{e}"
        );
        let e = go("GET", "/graphql?operationName=x", None)
            .unwrap_err()
            .message;
        assert!(e.contains("gives no \"query\" in its query string"), "{e}");
        let e = go("GET", "/graphql?query=%7Ba%7D&query=%7Bb%7D", None)
            .unwrap_err()
            .message;
        assert!(e.contains("\"query\" twice"), "{e}");
        let e = go("GET", "/graphql?query=%7Ba%7D&variables=%5B%5D", None)
            .unwrap_err()
            .message;
        assert!(e.contains("must be a JSON object, not a list"), "{e}");
        let e = go("GET", "/graphql?query=%7Ba%7D&variables=%7B", None)
            .unwrap_err()
            .message;
        assert!(e.contains("not valid JSON"), "{e}");
        // A POST's query string is not read (MLflow does not read it).
        let body =
            json!({"query": UI_GET_EXPERIMENT, "variables": {"input": {"experimentId": "8"}}})
                .to_string();
        assert_eq!(
            go("POST", "/graphql?query=%7B__schema%7Bx%7D%7D", Some(&body))
                .unwrap()
                .access,
            Access::Resources(vec![exp_read("8")])
        );
    }

    #[test]
    fn block_strings_dedent_as_graphql_core_does() {
        let lines = |text: &str| -> Vec<String> { text.split('\n').map(str::to_string).collect() };
        assert_eq!(dedent_block_string(&lines("")), "");
        assert_eq!(dedent_block_string(&lines("   \n  \n")), "");
        assert_eq!(dedent_block_string(&lines("  x")), "  x");
        assert_eq!(
            dedent_block_string(&lines("\n    a\n      b\n    \n")),
            "a\n  b"
        );
        assert_eq!(
            dedent_block_string(&lines("first\n\t  a\n\t b")),
            "first\n a\nb"
        );
        assert_eq!(dedent_block_string(&lines("é\n  ü\n   ñ")), "é\nü\n ñ");
    }
}
