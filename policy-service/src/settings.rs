//! Settings, read once at start-up from the environment (plus `.env`).
//!
//! Setting names are those of mlflow-oidc-auth, so an existing deployment's
//! environment keeps working. Every bad value stops start-up with a message that
//! names the setting, the value and what is accepted.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use mlflow_edge_authz::permission::{Permission, Source as GrantSource};
use thiserror::Error;
use url::Url;

use crate::groups::pattern::GroupPattern;
use crate::groups::Detection;
use crate::sessions::{RedisSettings, SessionType, SESSION_TYPES};

/// Routes the service serves itself; the callback path must not shadow them.
const RESERVED_PATHS: &[&str] = &[
    "/health",
    "/oidc/login",
    "/oidc/auth/status",
    "/logout",
    mlflow_edge_authz::wire::SESSION_KEYS_PATH,
    mlflow_edge_authz::wire::SESSION_RENEW_PATH,
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("setting {name} is required but not set")]
    Missing { name: &'static str },
    #[error("cannot read .env: {0}")]
    DotEnv(String),
    #[error("setting {name} has an invalid value {value:?}: expected {accepted}")]
    Invalid {
        name: &'static str,
        value: String,
        accepted: String,
    },
}

fn invalid(name: &'static str, value: &str, accepted: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        name,
        value: value.to_string(),
        accepted: accepted.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl fmt::Display for SameSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        })
    }
}

/// Where the users database lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file, created when missing.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database (tests).
    SqliteMemory,
    /// A PostgreSQL server: a `postgresql://` URL (libpq's form, which sqlx reads),
    /// SQLAlchemy's driver suffix already dropped. Holds the password: print it
    /// with `redacted()` (as `Debug` does).
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses a SQLAlchemy-style URL: `sqlite:///relative.db`, `sqlite:////abs.db`,
    /// `sqlite://` or `sqlite:///:memory:` (in memory); `sqlite::memory:` (sqlx's
    /// spelling) is accepted too. Or `postgresql://user:password@host:port/database`
    /// (also `postgres://`, and `postgresql+psycopg2://` / `postgresql+psycopg://`,
    /// whose driver is dropped), with libpq's query parameters such as `sslmode`.
    pub fn parse(value: &str) -> Result<Self, SettingsError> {
        const NAME: &str = "OIDC_USERS_DB_URI";
        const ACCEPTED: &str = "sqlite:///relative/path.db, sqlite:////absolute/path.db or \
                                postgresql://user:password@host:port/database (also postgres://, \
                                postgresql+psycopg2://, postgresql+psycopg://)";
        let value = value.trim();
        if value == "sqlite::memory:" || value == "sqlite://" || value == "sqlite:///:memory:" {
            return Ok(DatabaseUrl::SqliteMemory);
        }
        if let Some(url) = postgres_url(value) {
            // sqlx reads it at connect time; a URL it cannot read stops start-up here.
            return match url.parse::<sqlx::postgres::PgConnectOptions>() {
                Ok(_) => Ok(DatabaseUrl::Postgres(url)),
                Err(e) => Err(invalid(
                    NAME,
                    &redact_password(value),
                    format!("{ACCEPTED}; {e}"),
                )),
            };
        }
        let Some(rest) = value.strip_prefix("sqlite:///") else {
            return Err(invalid(NAME, &redact_password(value), ACCEPTED));
        };
        // Query parameters (`?mode=...`) are not supported: keep the path plain.
        if rest.is_empty() || rest.contains('?') {
            return Err(invalid(NAME, value, ACCEPTED));
        }
        // `sqlite:////abs` leaves `/abs`; `sqlite:///rel` leaves `rel`.
        Ok(DatabaseUrl::SqliteFile(PathBuf::from(rest)))
    }

    /// For messages and logs: the password of a PostgreSQL URL is hidden.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::SqliteFile(path) => path.display().to_string(),
            DatabaseUrl::SqliteMemory => "in memory".into(),
            DatabaseUrl::Postgres(url) => redact_password(url),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::SqliteFile(path) => f.debug_tuple("SqliteFile").field(path).finish(),
            DatabaseUrl::SqliteMemory => f.write_str("SqliteMemory"),
            DatabaseUrl::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

/// `postgresql://...` for the PostgreSQL forms SQLAlchemy users write (the
/// scheme's case ignored, a psycopg driver suffix dropped); None for others.
fn postgres_url(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    match scheme.to_ascii_lowercase().as_str() {
        "postgresql" | "postgres" | "postgresql+psycopg2" | "postgresql+psycopg" => {
            Some(format!("postgresql://{rest}"))
        }
        _ => None,
    }
}

/// Hides the password of a URL with credentials, so errors never print it.
fn redact_password(value: &str) -> String {
    match Url::parse(value) {
        Ok(mut url) if url.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which this one has.
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => value.to_string(),
        // Not a URL (a bad port, say): cut `user:password@` by hand.
        Err(_) => {
            let Some((scheme, rest)) = value.split_once("://") else {
                return value.to_string();
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) if userinfo.contains(':') => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}{tail}")
                }
                _ => value.to_string(),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Clone)]
pub struct Settings {
    pub oidc_discovery_url: Url,
    pub oidc_client_id: String,
    pub oidc_client_secret: Option<String>,
    pub oidc_public_client: bool,
    pub oidc_redirect_uri: Url,
    pub oidc_scope: Vec<String>,
    /// `OIDC_USE_REFRESH_TOKEN`: keep the IdP's refresh token (sealed) on the session
    /// and, at every renewal, refresh it and pass the gate again.
    pub oidc_use_refresh_token: bool,
    pub oidc_provider_display_name: String,
    pub oidc_group_name: Vec<String>,
    pub oidc_admin_group_name: Vec<String>,
    pub oidc_groups_attribute: String,
    pub oidc_username_field: Vec<String>,
    pub oidc_http_timeout_seconds: u64,
    pub secret_key: String,
    /// True when `SECRET_KEY` was absent and a random one was generated.
    pub secret_key_generated: bool,
    /// `OIDC_ALEMBIC_VERSION_TABLE`: where the schema's migration history is kept
    /// (`None`: sqlx's own `_sqlx_migrations`).
    pub migrations_table: Option<String>,
    /// `AUTHZ_SHARED_KEY`: what the edge filter must send to use `/authz/v1/...`.
    pub authz_shared_key: Option<String>,
    pub database_url: DatabaseUrl,
    pub session_cookie_name: String,
    pub session_cookie_secure: bool,
    pub session_cookie_samesite: SameSite,
    pub permanent_session_lifetime: u64,
    pub session_token_ttl_seconds: u64,
    pub listen_addr: SocketAddr,
    pub log_level: LogLevel,
    /// `OIDC_GROUP_NAME_PATTERN`: wildcards that also admit (never as admin).
    pub oidc_group_name_pattern: Vec<GroupPattern>,
    /// `OIDC_USERINFO_GROUPS`: read the groups claim from UserInfo when the ID token lacks it.
    pub oidc_userinfo_groups: bool,
    /// `OIDC_PROVISION_ON_BEARER_AUTH`: create the user of a bearer token on first use,
    /// through the same group gate (the filter shows the service new bearer tokens).
    pub oidc_provision_on_bearer_auth: bool,
    /// `OIDC_TRUST_BEARER_GROUP_CLAIMS`: a provisioned bearer user in an admin group is admin.
    pub oidc_trust_bearer_group_claims: bool,
    /// `OIDC_GROUP_DETECTION_PLUGIN`: where the groups come from.
    pub oidc_group_detection_plugin: Detection,
    /// `OIDC_GRAPH_API_URL`: Microsoft Graph's base URL (Entra ID detection).
    pub oidc_graph_api_url: Url,
    /// `SESSION_TYPE` (with `SESSION_FILE_DIR` or `REDIS_*`): where server-side sessions live.
    pub session_type: SessionType,
    /// `SESSION_KEY_PREFIX`: namespaces session files and Redis keys.
    pub session_key_prefix: String,
    /// `SESSION_PERMANENT`: the cookie gets a `Max-Age` (else it is a browser-session cookie).
    pub session_permanent: bool,
    /// `DEFAULT_MLFLOW_PERMISSION`: what a user holds where no grant applies.
    pub default_mlflow_permission: Permission,
    /// `DEFAULT_MLFLOW_GROUP_PERMISSION`: given to the creator's groups on a new resource.
    pub default_mlflow_group_permission: Option<Permission>,
    /// `PERMISSION_SOURCE_ORDER`: the grant sources walked, the first holding a grant wins.
    pub permission_source_order: Vec<GrantSource>,
    /// `MLFLOW_TRACKING_URI`: the MLflow server itself (not Envoy), which the service
    /// asks what runs, traces and logged models belong to, and what names are.
    pub mlflow_tracking_uri: Url,
}

// Secrets stay out of logs and panics alike.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("oidc_discovery_url", &self.oidc_discovery_url.as_str())
            .field("oidc_client_id", &self.oidc_client_id)
            .field(
                "oidc_client_secret",
                &self.oidc_client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("oidc_public_client", &self.oidc_public_client)
            .field("oidc_redirect_uri", &self.oidc_redirect_uri.as_str())
            .field("oidc_scope", &self.oidc_scope)
            .field("oidc_group_name", &self.oidc_group_name)
            .field("oidc_admin_group_name", &self.oidc_admin_group_name)
            .field("oidc_groups_attribute", &self.oidc_groups_attribute)
            .field("oidc_username_field", &self.oidc_username_field)
            .field("database_url", &self.database_url)
            .field("session_cookie_name", &self.session_cookie_name)
            .field("session_cookie_secure", &self.session_cookie_secure)
            .field("session_cookie_samesite", &self.session_cookie_samesite)
            .field(
                "permanent_session_lifetime",
                &self.permanent_session_lifetime,
            )
            .field("session_token_ttl_seconds", &self.session_token_ttl_seconds)
            .field("listen_addr", &self.listen_addr)
            .field("log_level", &self.log_level)
            .field("oidc_group_name_pattern", &self.oidc_group_name_pattern)
            .field("oidc_userinfo_groups", &self.oidc_userinfo_groups)
            .field(
                "oidc_group_detection_plugin",
                &self.oidc_group_detection_plugin,
            )
            .field("oidc_graph_api_url", &self.oidc_graph_api_url.as_str())
            .field("session_type", &self.session_type)
            .field("session_key_prefix", &self.session_key_prefix)
            .field("session_permanent", &self.session_permanent)
            .field("default_mlflow_permission", &self.default_mlflow_permission)
            .field(
                "default_mlflow_group_permission",
                &self.default_mlflow_group_permission,
            )
            .field("permission_source_order", &self.permission_source_order)
            .field("mlflow_tracking_uri", &self.mlflow_tracking_uri.as_str())
            .finish_non_exhaustive()
    }
}

/// Splits a comma list, trimming spaces and dropping empty items.
pub fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Parses a boolean the way operators write them.
pub fn parse_bool(name: &'static str, value: &str) -> Result<bool, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(name, value, "one of true, false, 1, 0, yes, no")),
    }
}

struct Source<'a> {
    vars: &'a HashMap<String, String>,
}

impl Source<'_> {
    /// The value if set to something other than blanks.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, SettingsError> {
        self.get(name).ok_or(SettingsError::Missing { name })
    }

    fn string(&self, name: &'static str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    fn list(&self, name: &'static str, default: &str) -> Result<Vec<String>, SettingsError> {
        let raw = self.get(name).unwrap_or(default);
        let list = comma_list(raw);
        if list.is_empty() {
            return Err(invalid(
                name,
                raw,
                "a comma-separated list with at least one name",
            ));
        }
        Ok(list)
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
        self.get(name).map_or(Ok(default), |v| parse_bool(name, v))
    }

    fn positive(&self, name: &'static str, default: u64) -> Result<u64, SettingsError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(invalid(name, v, "a whole number of seconds greater than 0")),
            },
        }
    }

    /// A permission level (`READ`, `USE`, `EDIT`, `MANAGE`, `NO_PERMISSIONS`, any
    /// case), or `None` when unset.
    fn permission(&self, name: &'static str) -> Result<Option<Permission>, SettingsError> {
        self.get(name)
            .map(|v| {
                Permission::parse(v)
                    .map_err(|_| invalid(name, v, "one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS"))
            })
            .transpose()
    }

    fn http_url(&self, name: &'static str) -> Result<Url, SettingsError> {
        let raw = self.required(name)?;
        match Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
            _ => Err(invalid(name, raw, "an absolute http:// or https:// URL")),
        }
    }
}

impl Settings {
    /// Reads `.env` (when present) and the process environment. Variables already
    /// in the environment win over `.env`, as with python-dotenv's defaults.
    pub fn from_env() -> Result<Self, SettingsError> {
        // A missing .env is normal; a malformed one stops start-up.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(err) if err.not_found() => {}
            Err(err) => return Err(SettingsError::DotEnv(err.to_string())),
        }
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Parses settings from a name → value map (the environment, or a test's map).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let src = Source { vars };

        let oidc_discovery_url = src.http_url("OIDC_DISCOVERY_URL")?;
        let oidc_client_id = src.required("OIDC_CLIENT_ID")?.to_string();
        let oidc_public_client = src.bool("OIDC_PUBLIC_CLIENT", false)?;
        let oidc_client_secret = src.get("OIDC_CLIENT_SECRET").map(String::from);
        match (oidc_public_client, &oidc_client_secret) {
            (false, None) => {
                return Err(SettingsError::Missing {
                    name: "OIDC_CLIENT_SECRET",
                })
            }
            (true, Some(_)) => {
                return Err(invalid(
                    "OIDC_CLIENT_SECRET",
                    "<set>",
                    "no secret when OIDC_PUBLIC_CLIENT=true (a public client has none)",
                ))
            }
            _ => {}
        }

        let oidc_redirect_uri = src.http_url("OIDC_REDIRECT_URI")?;
        let callback_path = oidc_redirect_uri.path();
        if RESERVED_PATHS.contains(&callback_path) || callback_path == "/" {
            return Err(invalid(
                "OIDC_REDIRECT_URI",
                oidc_redirect_uri.as_str(),
                format!(
                    "a URL whose path is not / nor one of the service's own routes ({})",
                    RESERVED_PATHS.join(", ")
                ),
            ));
        }

        let scope_raw = src.get("OIDC_SCOPE").unwrap_or("openid,email,profile");
        let mut oidc_scope: Vec<String> = scope_raw
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let oidc_use_refresh_token = src.bool("OIDC_USE_REFRESH_TOKEN", false)?;
        // Refresh tokens are asked for with `offline_access` (OpenID Connect Core 11).
        if oidc_use_refresh_token
            && !oidc_scope.is_empty()
            && !oidc_scope.iter().any(|s| s == "offline_access")
        {
            oidc_scope.push("offline_access".into());
        }
        if oidc_scope.is_empty() {
            return Err(invalid(
                "OIDC_SCOPE",
                scope_raw,
                "scopes separated by commas or spaces",
            ));
        }

        let (secret_key, secret_key_generated) = match src.get("SECRET_KEY") {
            Some(key) => (key.to_string(), false),
            None => (
                mlflow_edge_authz::wire::base64url_encode(&rand::random::<[u8; 32]>()),
                true,
            ),
        };

        let samesite_raw = src.get("SESSION_COOKIE_SAMESITE").unwrap_or("lax");
        let session_cookie_samesite = match samesite_raw.to_ascii_lowercase().as_str() {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => SameSite::None,
            _ => {
                return Err(invalid(
                    "SESSION_COOKIE_SAMESITE",
                    samesite_raw,
                    "one of lax, strict, none",
                ))
            }
        };

        let session_cookie_name = src.string("SESSION_COOKIE_NAME", "mlflow_session");
        if !is_cookie_name(&session_cookie_name) {
            return Err(invalid(
                "SESSION_COOKIE_NAME",
                &session_cookie_name,
                "a cookie name of letters, digits and !#$%&'*+-.^_`|~",
            ));
        }

        let addr_raw = src.get("POLICY_SERVICE_ADDR").unwrap_or("127.0.0.1:8090");
        let listen_addr = addr_raw.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "POLICY_SERVICE_ADDR",
                addr_raw,
                "an IP address and port, such as 127.0.0.1:8090 or [::]:8090",
            )
        })?;

        let level_raw = src.get("LOG_LEVEL").unwrap_or("INFO");
        let log_level = match level_raw.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "critical" => LogLevel::Error,
            _ => {
                return Err(invalid(
                    "LOG_LEVEL",
                    level_raw,
                    "one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL",
                ))
            }
        };

        Ok(Settings {
            oidc_discovery_url,
            oidc_client_id,
            oidc_client_secret,
            oidc_public_client,
            oidc_redirect_uri,
            oidc_scope,
            oidc_use_refresh_token,
            oidc_provider_display_name: src.string("OIDC_PROVIDER_DISPLAY_NAME", "Login with OIDC"),
            oidc_group_name: src.list("OIDC_GROUP_NAME", "mlflow")?,
            oidc_admin_group_name: src.list("OIDC_ADMIN_GROUP_NAME", "mlflow-admin")?,
            oidc_groups_attribute: src.string("OIDC_GROUPS_ATTRIBUTE", "groups"),
            oidc_username_field: src.list("OIDC_USERNAME_FIELD", "email,preferred_username")?,
            oidc_http_timeout_seconds: src.positive("OIDC_HTTP_TIMEOUT_SECONDS", 10)?,
            secret_key,
            secret_key_generated,
            migrations_table: migrations_table(src.get("OIDC_ALEMBIC_VERSION_TABLE"))?,
            authz_shared_key: src
                .get(mlflow_edge_authz::wire::SERVICE_KEY_ENV)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
            database_url: DatabaseUrl::parse(
                src.get("OIDC_USERS_DB_URI").unwrap_or("sqlite:///auth.db"),
            )?,
            session_cookie_name,
            session_cookie_secure: src.bool("SESSION_COOKIE_SECURE", false)?,
            session_cookie_samesite,
            permanent_session_lifetime: src.positive("PERMANENT_SESSION_LIFETIME", 86400)?,
            session_token_ttl_seconds: src.positive("SESSION_TOKEN_TTL_SECONDS", 300)?,
            listen_addr,
            log_level,
            oidc_group_name_pattern: comma_list(src.get("OIDC_GROUP_NAME_PATTERN").unwrap_or(""))
                .iter()
                .map(|p| GroupPattern::new(p))
                .collect(),
            oidc_userinfo_groups: src.bool("OIDC_USERINFO_GROUPS", false)?,
            oidc_provision_on_bearer_auth: src.bool("OIDC_PROVISION_ON_BEARER_AUTH", false)?,
            oidc_trust_bearer_group_claims: src.bool("OIDC_TRUST_BEARER_GROUP_CLAIMS", false)?,
            oidc_group_detection_plugin: group_detection(&src)?,
            oidc_graph_api_url: graph_api_url(&src)?,
            session_type: session_type(&src)?,
            session_key_prefix: src.string("SESSION_KEY_PREFIX", "mlflow_oidc:"),
            session_permanent: src.bool("SESSION_PERMANENT", false)?,
            default_mlflow_permission: src
                .permission("DEFAULT_MLFLOW_PERMISSION")?
                .unwrap_or(Permission::Manage),
            default_mlflow_group_permission: src.permission("DEFAULT_MLFLOW_GROUP_PERMISSION")?,
            permission_source_order: permission_source_order(&src)?,
            mlflow_tracking_uri: mlflow_tracking_uri(&src)?,
        })
    }

    /// The path the IdP redirects back to (the path of `OIDC_REDIRECT_URI`).
    pub fn callback_path(&self) -> &str {
        self.oidc_redirect_uri.path()
    }
}

/// `OIDC_GROUP_DETECTION_PLUGIN`: unset is the ID token's claim.
fn group_detection(src: &Source) -> Result<Detection, SettingsError> {
    const NAME: &str = "OIDC_GROUP_DETECTION_PLUGIN";
    match src.get(NAME) {
        None => Ok(Detection::Claims),
        Some(value) => {
            Detection::parse(value).ok_or_else(|| invalid(NAME, value, Detection::accepted()))
        }
    }
}

/// `OIDC_GRAPH_API_URL`, default Microsoft Graph v1.0.
fn graph_api_url(src: &Source) -> Result<Url, SettingsError> {
    const NAME: &str = "OIDC_GRAPH_API_URL";
    let raw = src.get(NAME).unwrap_or("https://graph.microsoft.com/v1.0");
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.query().is_none()
                && url.fragment().is_none() =>
        {
            Ok(url)
        }
        _ => Err(invalid(
            NAME,
            raw,
            "an absolute http:// or https:// URL without query, such as https://graph.microsoft.com/v1.0",
        )),
    }
}

/// `PERMISSION_SOURCE_ORDER`: a comma list of the grant sources, each at most once.
/// (The system we replace skips unknown names with a warning; a typo here would
/// silently change who may do what, so it stops start-up instead.)
fn permission_source_order(src: &Source) -> Result<Vec<GrantSource>, SettingsError> {
    const NAME: &str = "PERMISSION_SOURCE_ORDER";
    const ACCEPTED: &str =
        "a comma list of user, group, regex, group-regex (each at most once), such as \
         user,group,regex,group-regex";
    let raw = src.get(NAME).unwrap_or("user,group,regex,group-regex");
    let names = comma_list(raw);
    if names.is_empty() {
        return Err(invalid(NAME, raw, ACCEPTED));
    }
    let mut order = Vec::with_capacity(names.len());
    for name in &names {
        let source =
            GrantSource::parse_grant_source(name).map_err(|_| invalid(NAME, raw, ACCEPTED))?;
        if order.contains(&source) {
            return Err(invalid(NAME, raw, ACCEPTED));
        }
        order.push(source);
    }
    Ok(order)
}

/// `MLFLOW_TRACKING_URI`: MLflow's own address, default `http://127.0.0.1:5000`.
fn mlflow_tracking_uri(src: &Source) -> Result<Url, SettingsError> {
    const NAME: &str = "MLFLOW_TRACKING_URI";
    let raw = src.get(NAME).unwrap_or("http://127.0.0.1:5000");
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none() =>
        {
            Ok(url)
        }
        _ => Err(invalid(
            NAME,
            &redact_password(raw),
            "the MLflow server's own http:// or https:// URL (not Envoy's), without \
             credentials or query, such as http://127.0.0.1:5000",
        )),
    }
}

/// `SESSION_TYPE` and the settings of its store. `REDIS_*` are read only for
/// `redis` (Kubernetes sets `REDIS_PORT=tcp://...` for a Service named `redis`).
fn session_type(src: &Source) -> Result<SessionType, SettingsError> {
    const NAME: &str = "SESSION_TYPE";
    let raw = src.get(NAME).unwrap_or("sql");
    match raw.to_ascii_lowercase().as_str() {
        "sql" => Ok(SessionType::Sql),
        "filesystem" => Ok(SessionType::Filesystem {
            dir: PathBuf::from(src.get("SESSION_FILE_DIR").unwrap_or("flask_session")),
        }),
        "redis" => {
            let port_raw = src.get("REDIS_PORT").unwrap_or("6379");
            let port = match port_raw.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(invalid(
                        "REDIS_PORT",
                        port_raw,
                        "a port number from 1 to 65535 (under Kubernetes, a Service named \
                         redis sets REDIS_PORT=tcp://...: set REDIS_PORT explicitly)",
                    ))
                }
            };
            let db_raw = src.get("REDIS_DB").unwrap_or("0");
            let db = db_raw.parse::<u32>().map_err(|_| {
                invalid(
                    "REDIS_DB",
                    db_raw,
                    "a database number: a whole number from 0",
                )
            })?;
            Ok(SessionType::Redis(RedisSettings {
                host: src.string("REDIS_HOST", "localhost"),
                port,
                db: i64::from(db),
                username: src.get("REDIS_USERNAME").map(String::from),
                password: src.get("REDIS_PASSWORD").map(String::from),
                ssl: src.bool("REDIS_SSL", false)?,
            }))
        }
        _ => Err(invalid(NAME, raw, format!("one of {SESSION_TYPES}"))),
    }
}

/// RFC 6265 cookie-name (an RFC 7230 token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A table name the migration history may live in: a plain SQL identifier.
fn migrations_table(value: Option<&str>) -> Result<Option<String>, SettingsError> {
    let Some(name) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let plain = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return Err(invalid(
            "OIDC_ALEMBIC_VERSION_TABLE",
            name,
            "a table name of letters, digits and _ (at most 63, not starting with a digit)",
        ));
    }
    Ok(Some(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            (
                "OIDC_DISCOVERY_URL",
                "https://idp.example.com/.well-known/openid-configuration",
            ),
            ("OIDC_CLIENT_ID", "mlflow"),
            ("OIDC_CLIENT_SECRET", "s3cret"),
            ("OIDC_REDIRECT_URI", "https://mlflow.example.com/callback"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars = base();
        for (k, v) in pairs {
            vars.insert(k.to_string(), v.to_string());
        }
        vars
    }

    #[test]
    fn defaults() {
        let s = Settings::from_vars(&base()).unwrap();
        assert_eq!(s.oidc_scope, vec!["openid", "email", "profile"]);
        assert_eq!(s.oidc_provider_display_name, "Login with OIDC");
        assert_eq!(s.oidc_group_name, vec!["mlflow"]);
        assert_eq!(s.oidc_admin_group_name, vec!["mlflow-admin"]);
        assert_eq!(s.oidc_groups_attribute, "groups");
        assert_eq!(s.oidc_username_field, vec!["email", "preferred_username"]);
        assert_eq!(s.oidc_http_timeout_seconds, 10);
        assert_eq!(
            s.database_url,
            DatabaseUrl::SqliteFile(PathBuf::from("auth.db"))
        );
        assert_eq!(s.session_cookie_name, "mlflow_session");
        assert!(!s.session_cookie_secure);
        assert_eq!(s.session_cookie_samesite, SameSite::Lax);
        assert_eq!(s.permanent_session_lifetime, 86400);
        assert_eq!(s.session_token_ttl_seconds, 300);
        assert_eq!(s.listen_addr, "127.0.0.1:8090".parse().unwrap());
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.callback_path(), "/callback");
        assert!(s.secret_key_generated);
        assert!(!s.secret_key.is_empty());
    }

    #[test]
    fn missing_mandatory_names_the_setting() {
        for name in [
            "OIDC_DISCOVERY_URL",
            "OIDC_CLIENT_ID",
            "OIDC_CLIENT_SECRET",
            "OIDC_REDIRECT_URI",
        ] {
            let mut vars = base();
            vars.remove(name);
            let err = Settings::from_vars(&vars).unwrap_err();
            assert_eq!(err, SettingsError::Missing { name });
            assert!(err.to_string().contains(name), "{err}");
        }
        // Blank counts as missing.
        let err = Settings::from_vars(&with(&[("OIDC_CLIENT_ID", "  ")])).unwrap_err();
        assert!(err.to_string().contains("OIDC_CLIENT_ID"));
    }

    #[test]
    fn public_client_needs_no_secret_and_refuses_one() {
        let mut vars = with(&[("OIDC_PUBLIC_CLIENT", "true")]);
        assert!(Settings::from_vars(&vars).is_err());
        vars.remove("OIDC_CLIENT_SECRET");
        let s = Settings::from_vars(&vars).unwrap();
        assert!(s.oidc_public_client);
        assert_eq!(s.oidc_client_secret, None);
    }

    #[test]
    fn bad_samesite_names_value_and_accepted_values() {
        let err = Settings::from_vars(&with(&[("SESSION_COOKIE_SAMESITE", "sideways")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SESSION_COOKIE_SAMESITE"), "{err}");
        assert!(err.contains("sideways"), "{err}");
        assert!(err.contains("lax, strict, none"), "{err}");
        let s = Settings::from_vars(&with(&[("SESSION_COOKIE_SAMESITE", "Strict")])).unwrap();
        assert_eq!(s.session_cookie_samesite, SameSite::Strict);
    }

    #[test]
    fn booleans() {
        for (raw, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ] {
            let s = Settings::from_vars(&with(&[("SESSION_COOKIE_SECURE", raw)])).unwrap();
            assert_eq!(s.session_cookie_secure, expected, "{raw}");
        }
        let err = Settings::from_vars(&with(&[("SESSION_COOKIE_SECURE", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SESSION_COOKIE_SECURE"), "{err}");
        assert!(err.contains("maybe"), "{err}");
        assert!(err.contains("true, false, 1, 0, yes, no"), "{err}");
    }

    #[test]
    fn bad_numbers_urls_and_addresses() {
        for (name, value) in [
            ("PERMANENT_SESSION_LIFETIME", "a day"),
            ("SESSION_TOKEN_TTL_SECONDS", "0"),
            ("OIDC_HTTP_TIMEOUT_SECONDS", "-1"),
            ("OIDC_DISCOVERY_URL", "idp.example.com"),
            ("OIDC_REDIRECT_URI", "ftp://x/callback"),
            ("OIDC_REDIRECT_URI", "https://mlflow.example.com/health"),
            ("POLICY_SERVICE_ADDR", "localhost"),
            ("LOG_LEVEL", "loud"),
            ("SESSION_COOKIE_NAME", "my session"),
        ] {
            let err = Settings::from_vars(&with(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            assert!(err.contains(value), "{err}");
            assert!(err.contains("expected"), "{err}");
        }
    }

    #[test]
    fn comma_lists_accept_spaces() {
        let s = Settings::from_vars(&with(&[
            ("OIDC_GROUP_NAME", " team-a , team-b,,"),
            ("OIDC_ADMIN_GROUP_NAME", "admins,  ops"),
            ("OIDC_USERNAME_FIELD", "preferred_username , email"),
            ("OIDC_SCOPE", "openid email, profile,groups"),
            ("LOG_LEVEL", "warning"),
        ]))
        .unwrap();
        assert_eq!(s.oidc_group_name, vec!["team-a", "team-b"]);
        assert_eq!(s.oidc_admin_group_name, vec!["admins", "ops"]);
        assert_eq!(s.oidc_username_field, vec!["preferred_username", "email"]);
        assert_eq!(s.oidc_scope, vec!["openid", "email", "profile", "groups"]);
        assert_eq!(s.log_level, LogLevel::Warn);
    }

    #[test]
    fn sqlite_url_forms() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///auth.db").unwrap(),
            DatabaseUrl::SqliteFile(PathBuf::from("auth.db"))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///data/auth.db").unwrap(),
            DatabaseUrl::SqliteFile(PathBuf::from("data/auth.db"))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:////var/lib/mlflow/auth.db").unwrap(),
            DatabaseUrl::SqliteFile(PathBuf::from("/var/lib/mlflow/auth.db"))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap(),
            DatabaseUrl::SqliteMemory
        );
        let err = DatabaseUrl::parse("mysql://u:pw@db/mlflow")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql://u:***@db/mlflow"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        for bad in [
            "sqlite:///",
            "sqlite://auth.db",
            "mysql://x",
            "postgresql+asyncpg://u@db/x",
            "postgresql://u@db:notaport/x",
            "postgresql://u@db/x?sslmode=sometimes",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("OIDC_USERS_DB_URI"), "{err}");
            assert!(err.contains(bad), "{err}");
            assert!(err.contains("postgresql://user:password@host"), "{err}");
        }
    }

    #[test]
    fn postgres_url_forms() {
        let pg = |s: &str| DatabaseUrl::Postgres(s.to_string());
        for (given, wanted) in [
            (
                "postgresql://u:pw@db:5433/mlflow",
                "postgresql://u:pw@db:5433/mlflow",
            ),
            ("postgres://u:pw@db/mlflow", "postgresql://u:pw@db/mlflow"),
            (
                "postgresql+psycopg2://u:pw@db/mlflow?sslmode=require",
                "postgresql://u:pw@db/mlflow?sslmode=require",
            ),
            (
                "postgresql+psycopg://u@db/mlflow",
                "postgresql://u@db/mlflow",
            ),
            ("PostgreSQL://db/mlflow", "postgresql://db/mlflow"),
        ] {
            assert_eq!(DatabaseUrl::parse(given).unwrap(), pg(wanted), "{given}");
        }
        let url = DatabaseUrl::parse("postgresql://u:s3cret@db/mlflow").unwrap();
        assert_eq!(url.redacted(), "postgresql://u:***@db/mlflow");
        assert!(!format!("{url:?}").contains("s3cret"));
        let err = DatabaseUrl::parse("postgresql://u:s3cret@db:x/mlflow")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let s = Settings::from_vars(&base()).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"));
    }

    #[test]
    fn group_settings() {
        let s = Settings::from_vars(&base()).unwrap();
        assert!(s.oidc_group_name_pattern.is_empty());
        assert!(!s.oidc_userinfo_groups);
        assert_eq!(s.oidc_group_detection_plugin, Detection::Claims);
        assert_eq!(
            s.oidc_graph_api_url.as_str(),
            "https://graph.microsoft.com/v1.0"
        );

        let s = Settings::from_vars(&with(&[
            ("OIDC_GROUP_NAME_PATTERN", " mlflow-* , team-?,, "),
            ("OIDC_USERINFO_GROUPS", "true"),
            (
                "OIDC_GROUP_DETECTION_PLUGIN",
                "mlflow_oidc_auth.plugins.group_detection_microsoft_entra_id",
            ),
            ("OIDC_GRAPH_API_URL", "http://127.0.0.1:9/v1.0"),
        ]))
        .unwrap();
        let patterns: Vec<&str> = s
            .oidc_group_name_pattern
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert_eq!(patterns, vec!["mlflow-*", "team-?"]);
        assert!(s.oidc_userinfo_groups);
        assert_eq!(s.oidc_group_detection_plugin, Detection::MicrosoftEntraId);
        assert_eq!(s.oidc_graph_api_url.as_str(), "http://127.0.0.1:9/v1.0");
        let s = Settings::from_vars(&with(&[(
            "OIDC_GROUP_DETECTION_PLUGIN",
            "microsoft_entra_id",
        )]))
        .unwrap();
        assert_eq!(s.oidc_group_detection_plugin, Detection::MicrosoftEntraId);

        let err = Settings::from_vars(&with(&[("OIDC_GROUP_DETECTION_PLUGIN", "my.plugin")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OIDC_GROUP_DETECTION_PLUGIN"), "{err}");
        assert!(err.contains("my.plugin"), "{err}");
        assert!(
            err.contains(
                "mlflow_oidc_auth.plugins.group_detection_microsoft_entra_id, microsoft_entra_id"
            ),
            "{err}"
        );
        for bad in ["graph.microsoft.com", "ftp://x/v1.0", "https://g/v1.0?x=1"] {
            let err = Settings::from_vars(&with(&[("OIDC_GRAPH_API_URL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("OIDC_GRAPH_API_URL"), "{err}");
        }
        let err = Settings::from_vars(&with(&[("OIDC_USERINFO_GROUPS", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OIDC_USERINFO_GROUPS"), "{err}");
    }

    #[test]
    fn session_store_settings() {
        let s = Settings::from_vars(&base()).unwrap();
        assert_eq!(s.session_type, SessionType::Sql);
        assert_eq!(s.session_key_prefix, "mlflow_oidc:");
        assert!(!s.session_permanent);

        let s = Settings::from_vars(&with(&[
            ("SESSION_TYPE", "filesystem"),
            ("SESSION_KEY_PREFIX", "team:"),
            ("SESSION_PERMANENT", "True"),
            // Not read unless SESSION_TYPE=redis.
            ("REDIS_PORT", "tcp://10.0.0.1:6379"),
        ]))
        .unwrap();
        assert_eq!(
            s.session_type,
            SessionType::Filesystem {
                dir: PathBuf::from("flask_session")
            }
        );
        assert_eq!(s.session_key_prefix, "team:");
        assert!(s.session_permanent);
        let s = Settings::from_vars(&with(&[
            ("SESSION_TYPE", "filesystem"),
            ("SESSION_FILE_DIR", "/var/lib/sessions"),
        ]))
        .unwrap();
        assert_eq!(
            s.session_type,
            SessionType::Filesystem {
                dir: PathBuf::from("/var/lib/sessions")
            }
        );

        let s = Settings::from_vars(&with(&[("SESSION_TYPE", "Redis")])).unwrap();
        let SessionType::Redis(redis) = &s.session_type else {
            panic!("{:?}", s.session_type)
        };
        assert_eq!(redis.target(), "redis://localhost:6379/0");
        assert_eq!(
            (redis.username.as_ref(), redis.password.as_ref()),
            (None, None)
        );
        let s = Settings::from_vars(&with(&[
            ("SESSION_TYPE", "redis"),
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "3"),
            ("REDIS_USERNAME", "mlflow"),
            ("REDIS_PASSWORD", "hunter2"),
            ("REDIS_SSL", "yes"),
        ]))
        .unwrap();
        let SessionType::Redis(redis) = &s.session_type else {
            panic!("{:?}", s.session_type)
        };
        assert_eq!(redis.target(), "rediss://cache.internal:6380/3");
        assert_eq!(redis.username.as_deref(), Some("mlflow"));
        assert_eq!(redis.password.as_deref(), Some("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));

        for (name, value, accepted) in [
            ("SESSION_TYPE", "memcached", "one of sql, filesystem, redis"),
            ("SESSION_PERMANENT", "forever", "true, false, 1, 0, yes, no"),
            ("REDIS_PORT", "0", "a port number from 1 to 65535"),
            (
                "REDIS_PORT",
                "tcp://10.0.0.1:6379",
                "a port number from 1 to 65535",
            ),
            ("REDIS_PORT", "70000", "a port number from 1 to 65535"),
            ("REDIS_DB", "-1", "a database number"),
            ("REDIS_SSL", "sometimes", "true, false, 1, 0, yes, no"),
        ] {
            let err = Settings::from_vars(&with(&[("SESSION_TYPE", "redis"), (name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            assert!(err.contains(value), "{err}");
            assert!(err.contains(accepted), "{err}");
        }
    }

    #[test]
    fn permission_settings() {
        let s = Settings::from_vars(&base()).unwrap();
        assert_eq!(s.default_mlflow_permission, Permission::Manage);
        assert_eq!(s.default_mlflow_group_permission, None);
        assert_eq!(
            s.permission_source_order,
            vec![
                GrantSource::User,
                GrantSource::Group,
                GrantSource::Regex,
                GrantSource::GroupRegex
            ]
        );
        assert_eq!(s.mlflow_tracking_uri.as_str(), "http://127.0.0.1:5000/");

        let s = Settings::from_vars(&with(&[
            ("DEFAULT_MLFLOW_PERMISSION", "no_permissions"),
            ("DEFAULT_MLFLOW_GROUP_PERMISSION", "READ"),
            ("PERMISSION_SOURCE_ORDER", " group-regex , user "),
            ("MLFLOW_TRACKING_URI", "https://mlflow.internal:8443/base"),
        ]))
        .unwrap();
        assert_eq!(s.default_mlflow_permission, Permission::NoPermissions);
        assert_eq!(s.default_mlflow_group_permission, Some(Permission::Read));
        assert_eq!(
            s.permission_source_order,
            vec![GrantSource::GroupRegex, GrantSource::User]
        );
        assert_eq!(
            s.mlflow_tracking_uri.as_str(),
            "https://mlflow.internal:8443/base"
        );

        for (name, value, accepted) in [
            (
                "DEFAULT_MLFLOW_PERMISSION",
                "OWNER",
                "one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS",
            ),
            (
                "DEFAULT_MLFLOW_GROUP_PERMISSION",
                "ALL",
                "one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS",
            ),
            (
                "PERMISSION_SOURCE_ORDER",
                "user,groups",
                "user, group, regex, group-regex",
            ),
            (
                "PERMISSION_SOURCE_ORDER",
                "user,group,user",
                "each at most once",
            ),
            (
                "PERMISSION_SOURCE_ORDER",
                ",",
                "user, group, regex, group-regex",
            ),
            ("MLFLOW_TRACKING_URI", "databricks", "http:// or https://"),
            (
                "MLFLOW_TRACKING_URI",
                "file:///tmp/mlruns",
                "http:// or https://",
            ),
        ] {
            let err = Settings::from_vars(&with(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            assert!(err.contains(value), "{err}");
            assert!(err.contains(accepted), "{err}");
        }
        let err = Settings::from_vars(&with(&[(
            "MLFLOW_TRACKING_URI",
            "http://u:hunter2@mlflow:5000",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("MLFLOW_TRACKING_URI"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
