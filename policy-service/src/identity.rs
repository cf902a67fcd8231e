//! Who signed in, read from the verified ID-token claims, and whether they may.

use serde_json::{Map, Value};

use crate::groups::pattern::{first_match, GroupPattern};

/// The outcome of the group gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// In an `OIDC_ADMIN_GROUP_NAME` group: admitted, and admin.
    Admin,
    /// In an `OIDC_GROUP_NAME` group: admitted.
    Member,
    /// In a group that matches an `OIDC_GROUP_NAME_PATTERN` pattern: admitted.
    MemberByPattern { group: String, pattern: String },
    /// In neither: refused.
    Refused,
}

/// The username: the first claim of `fields` holding a non-empty string,
/// lower-cased (the rule the filter applies to bearer tokens too). The error
/// names the fields tried.
pub fn username(claims: &Map<String, Value>, fields: &[String]) -> Result<String, String> {
    mlflow_edge_authz::claims::username(claims, fields).map_err(|e| {
        format!(
            "the identity provider sent none of the claims that name a user ({}); \
             set OIDC_USERNAME_FIELD to a claim it sends",
            e.fields
        )
    })
}

/// The display name: the `name` claim, else the username.
pub fn display_name(claims: &Map<String, Value>, username: &str) -> String {
    match claims.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => username.to_string(),
    }
}

/// The claim `attribute` names (`OIDC_GROUPS_ATTRIBUTE`): a top-level claim of that
/// exact name (so names with dots, like Auth0's `https://example.com/groups`, work),
/// else a dotted path into nested objects (Keycloak's `realm_access.roles`).
pub fn claim_at<'a>(claims: &'a Map<String, Value>, attribute: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(attribute) {
        return Some(value);
    }
    if !attribute.contains('.') {
        return None;
    }
    let mut parts = attribute.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The groups of the claim `attribute` (see [`claim_at`]). A lone string is one
/// group; non-strings and empty strings are dropped; duplicates are dropped.
pub fn groups(claims: &Map<String, Value>, attribute: &str) -> Vec<String> {
    group_names(claim_at(claims, attribute))
}

/// A claim's value as group names: a list of strings, or a lone string.
pub fn group_names(value: Option<&Value>) -> Vec<String> {
    let candidates: Vec<&Value> = match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(value @ Value::String(_)) => vec![value],
        _ => Vec::new(),
    };
    let mut out: Vec<String> = Vec::new();
    for value in candidates {
        if let Value::String(s) = value {
            if !s.is_empty() && !out.iter().any(|g| g == s) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// The login gate, admin groups first (exact names), then the allowed groups (exact
/// names) and the `OIDC_GROUP_NAME_PATTERN` wildcards, which never make an admin.
pub fn admission(
    groups: &[String],
    allowed: &[String],
    patterns: &[GroupPattern],
    admin: &[String],
) -> Admission {
    if groups.iter().any(|g| admin.contains(g)) {
        return Admission::Admin;
    }
    if groups.iter().any(|g| allowed.contains(g)) {
        return Admission::Member;
    }
    for group in groups {
        if let Some(pattern) = first_match(patterns, group) {
            return Admission::MemberByPattern {
                group: group.clone(),
                pattern: pattern.to_string(),
            };
        }
    }
    Admission::Refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn fields(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn username_in_field_order_lower_cased() {
        let c = claims(json!({"email": "Alice@Example.COM", "preferred_username": "alice"}));
        assert_eq!(
            username(&c, &fields(&["email", "preferred_username"])).unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            username(&c, &fields(&["preferred_username", "email"])).unwrap(),
            "alice"
        );
        // Empty or non-string claims are skipped.
        let c = claims(json!({"email": "", "upn": 7, "preferred_username": "Bob"}));
        assert_eq!(
            username(&c, &fields(&["email", "upn", "preferred_username"])).unwrap(),
            "bob"
        );
    }

    #[test]
    fn username_missing_names_the_fields() {
        let c = claims(json!({"sub": "123"}));
        let err = username(&c, &fields(&["email", "preferred_username"])).unwrap_err();
        assert!(err.contains("email, preferred_username"), "{err}");
    }

    #[test]
    fn groups_from_list_or_lone_string() {
        let c = claims(json!({"groups": ["mlflow", 3, "", null, "ops", "mlflow", {"a": 1}]}));
        assert_eq!(groups(&c, "groups"), vec!["mlflow", "ops"]);
        let c = claims(json!({"roles": "mlflow-admin"}));
        assert_eq!(groups(&c, "roles"), vec!["mlflow-admin"]);
        assert!(groups(&c, "groups").is_empty());
        let c = claims(json!({"groups": 42}));
        assert!(groups(&c, "groups").is_empty());
    }

    #[test]
    fn gate() {
        let allowed = fields(&["mlflow"]);
        let admin = fields(&["mlflow-admin", "ops"]);
        let gate = |groups: &[&str]| admission(&fields(groups), &allowed, &[], &admin);
        assert_eq!(gate(&["ops"]), Admission::Admin);
        assert_eq!(gate(&["x", "mlflow"]), Admission::Member);
        assert_eq!(gate(&["mlflow", "mlflow-admin"]), Admission::Admin);
        assert_eq!(gate(&["MLflow", "other"]), Admission::Refused);
        assert_eq!(gate(&[]), Admission::Refused);
    }

    #[test]
    fn gate_with_patterns() {
        let allowed = fields(&["mlflow"]);
        let admin = fields(&["mlflow-admin"]);
        let patterns = vec![GroupPattern::new("team-*"), GroupPattern::new("ml-?")];
        let gate = |groups: &[&str]| admission(&fields(groups), &allowed, &patterns, &admin);
        assert_eq!(
            gate(&["other", "team-data"]),
            Admission::MemberByPattern {
                group: "team-data".into(),
                pattern: "team-*".into()
            }
        );
        assert_eq!(
            gate(&["ml-x"]),
            Admission::MemberByPattern {
                group: "ml-x".into(),
                pattern: "ml-?".into()
            }
        );
        // Exact names win over patterns; admin wins over both.
        assert_eq!(gate(&["team-a", "mlflow"]), Admission::Member);
        assert_eq!(gate(&["team-a", "mlflow-admin"]), Admission::Admin);
        // Patterns never make an admin, even one matching the admin group's name.
        let admin_like = vec![GroupPattern::new("mlflow-*")];
        assert_eq!(
            admission(&fields(&["mlflow-admins"]), &allowed, &admin_like, &admin),
            Admission::MemberByPattern {
                group: "mlflow-admins".into(),
                pattern: "mlflow-*".into()
            }
        );
        assert_eq!(gate(&["Team-a", "ml-xy", "team"]), Admission::Refused);
    }

    #[test]
    fn groups_at_a_dotted_path() {
        let c = claims(json!({
            "realm_access": {"roles": ["mlflow", "offline_access", 3, "mlflow"]},
            "resource_access": {"mlflow": {"roles": "mlflow-admin"}},
            "https://example.com/groups": ["auth0-group"],
            "a": {"b": 1},
            "flat": "x",
        }));
        assert_eq!(
            groups(&c, "realm_access.roles"),
            vec!["mlflow", "offline_access"]
        );
        assert_eq!(
            groups(&c, "resource_access.mlflow.roles"),
            vec!["mlflow-admin"]
        );
        // A top-level claim whose name has dots is read as is.
        assert_eq!(
            groups(&c, "https://example.com/groups"),
            vec!["auth0-group"]
        );
        for missing in [
            "realm_access.nope",
            "realm_access.roles.x",
            "a.b",
            "a.b.c",
            "flat.x",
            "nope.x",
            ".",
            "realm_access.",
        ] {
            assert!(groups(&c, missing).is_empty(), "{missing}");
        }
    }

    #[test]
    fn display_name_falls_back_to_username() {
        assert_eq!(
            display_name(&claims(json!({"name": "Alice A."})), "alice"),
            "Alice A."
        );
        assert_eq!(display_name(&claims(json!({"name": 1})), "alice"), "alice");
    }
}
