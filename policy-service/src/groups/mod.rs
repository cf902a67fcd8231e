//! Where a user's groups come from at sign-in (`OIDC_GROUP_DETECTION_PLUGIN`), and
//! the group-name patterns of the gate (`OIDC_GROUP_NAME_PATTERN`).
//!
//! One detector per file: `claims` (the default: the ID token's groups claim,
//! optionally from UserInfo) and `microsoft_entra_id` (Microsoft Graph
//! `/me/memberOf` with the user's access token). A set detector replaces the
//! claim-based groups; its failure refuses the sign-in, never lets it pass.

pub mod claims;
pub mod microsoft_entra_id;
pub mod pattern;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::idp::{Idp, IdpError};
use crate::settings::Settings;

/// Why no groups could be found. The sign-in is refused with this message.
#[derive(Debug, Error)]
pub enum DetectorError {
    #[error("group detection through Microsoft Graph failed: {0}")]
    Graph(String),
    #[error("reading the groups from the identity provider's UserInfo endpoint failed: {0}")]
    UserInfo(#[from] IdpError),
    #[error("cannot start the HTTP client for group detection: {0}")]
    Client(String),
}

pub type DetectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<String>, DetectorError>> + Send + 'a>>;

/// A source of a signing-in user's groups.
pub trait GroupDetector: Send + Sync {
    /// The detector's name, for logs.
    fn name(&self) -> &'static str;

    /// The user's groups: de-duplicated group names. `access_token` is the user's
    /// access token from the code exchange; `id_claims` the verified ID token's claims.
    fn groups<'a>(
        &'a self,
        access_token: &'a str,
        id_claims: &'a Map<String, Value>,
    ) -> DetectFuture<'a>;
}

/// The values of `OIDC_GROUP_DETECTION_PLUGIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// Unset: the ID token's claim `OIDC_GROUPS_ATTRIBUTE`.
    Claims,
    /// Microsoft Graph `/me/memberOf`.
    MicrosoftEntraId,
}

/// `(value, detector)` pairs accepted by `OIDC_GROUP_DETECTION_PLUGIN`: the module
/// names of mlflow-oidc-auth and short names.
pub const DETECTION_VALUES: &[(&str, Detection)] = &[
    (
        "mlflow_oidc_auth.plugins.group_detection_microsoft_entra_id",
        Detection::MicrosoftEntraId,
    ),
    ("microsoft_entra_id", Detection::MicrosoftEntraId),
];

impl Detection {
    /// Parses a non-blank setting value; None for an unknown one.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        DETECTION_VALUES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, detection)| *detection)
    }

    /// The accepted values, for the start-up error.
    pub fn accepted() -> String {
        let names: Vec<&str> = DETECTION_VALUES.iter().map(|(name, _)| *name).collect();
        format!(
            "one of {} (or unset, for the groups claim of the ID token)",
            names.join(", ")
        )
    }
}

/// The detector the settings select.
pub fn detector(
    settings: &Settings,
    idp: Arc<Idp>,
) -> Result<Box<dyn GroupDetector>, DetectorError> {
    Ok(match settings.oidc_group_detection_plugin {
        Detection::Claims => Box::new(claims::ClaimGroups::new(settings, idp)),
        Detection::MicrosoftEntraId => {
            Box::new(microsoft_entra_id::MicrosoftEntraId::new(settings)?)
        }
    })
}
