//! Who signed in, read from the verified ID-token claims, and whether they may.

use serde_json::{Map, Value};

/// The outcome of the group gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In an `OIDC_ADMIN_GROUP_NAME` group: admitted, and admin.
    Admin,
    /// In an `OIDC_GROUP_NAME` group: admitted.
    Member,
    /// In neither: refused.
    Refused,
}

/// The username: the first claim of `fields` holding a non-empty string,
/// lower-cased. The error names the fields tried.
pub fn username(claims: &Map<String, Value>, fields: &[String]) -> Result<String, String> {
    fields
        .iter()
        .find_map(|field| match claims.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_lowercase()),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "the identity provider sent none of the claims that name a user ({}); \
                 set OIDC_USERNAME_FIELD to a claim it sends",
                fields.join(", ")
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

/// The groups of the top-level claim `attribute`. A lone string is one group;
/// non-strings and empty strings are dropped; duplicates are dropped.
pub fn groups(claims: &Map<String, Value>, attribute: &str) -> Vec<String> {
    let candidates: Vec<&Value> = match claims.get(attribute) {
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

/// The login gate: exact group-name matches, admin groups first.
pub fn admission(groups: &[String], allowed: &[String], admin: &[String]) -> Admission {
    if groups.iter().any(|g| admin.contains(g)) {
        Admission::Admin
    } else if groups.iter().any(|g| allowed.contains(g)) {
        Admission::Member
    } else {
        Admission::Refused
    }
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
        assert_eq!(
            admission(&fields(&["ops"]), &allowed, &admin),
            Admission::Admin
        );
        assert_eq!(
            admission(&fields(&["x", "mlflow"]), &allowed, &admin),
            Admission::Member
        );
        assert_eq!(
            admission(&fields(&["mlflow", "mlflow-admin"]), &allowed, &admin),
            Admission::Admin
        );
        assert_eq!(
            admission(&fields(&["MLflow", "other"]), &allowed, &admin),
            Admission::Refused
        );
        assert_eq!(admission(&[], &allowed, &admin), Admission::Refused);
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
