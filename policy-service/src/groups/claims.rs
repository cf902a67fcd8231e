//! The default detector: the groups claim `OIDC_GROUPS_ATTRIBUTE` of the verified
//! ID token; with `OIDC_USERINFO_GROUPS=true`, read from the UserInfo endpoint when
//! the ID token has no such claim (its `sub` must be the ID token's).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{DetectFuture, GroupDetector};
use crate::identity::{claim_at, group_names};
use crate::idp::{Idp, IdpError};
use crate::settings::Settings;

pub struct ClaimGroups {
    attribute: String,
    /// The IdP to ask UserInfo, when `OIDC_USERINFO_GROUPS` allows it.
    userinfo: Option<Arc<Idp>>,
}

impl ClaimGroups {
    pub fn new(settings: &Settings, idp: Arc<Idp>) -> Self {
        ClaimGroups {
            attribute: settings.oidc_groups_attribute.clone(),
            userinfo: settings.oidc_userinfo_groups.then_some(idp),
        }
    }
}

impl GroupDetector for ClaimGroups {
    fn name(&self) -> &'static str {
        "claims"
    }

    fn groups<'a>(
        &'a self,
        access_token: &'a str,
        id_claims: &'a Map<String, Value>,
    ) -> DetectFuture<'a> {
        Box::pin(async move {
            if let Some(value) = claim_at(id_claims, &self.attribute) {
                return Ok(group_names(Some(value)));
            }
            let Some(idp) = &self.userinfo else {
                return Ok(Vec::new());
            };
            let sub = id_claims
                .get("sub")
                .and_then(Value::as_str)
                .ok_or_else(|| IdpError::UserInfo("the ID token has no sub".into()))?;
            if access_token.is_empty() {
                return Err(IdpError::UserInfo("no access token to present".into()).into());
            }
            let info = idp.userinfo(access_token, sub).await?;
            Ok(group_names(claim_at(&info, &self.attribute)))
        })
    }
}
