//! Reading identity claims: the one username rule, shared by the filter (bearer
//! tokens) and the policy service (ID tokens at sign-in).

use std::fmt;

use serde_json::{Map, Value};

/// None of the username claims held a usable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoUsername {
    /// The claims tried, comma-separated, in order.
    pub fields: String,
}

impl fmt::Display for NoUsername {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "none of the username claims {} is set", self.fields)
    }
}

impl std::error::Error for NoUsername {}

/// `OIDC_USERNAME_FIELD`: the first of `fields` whose claim is a string that is
/// not blank, trimmed and lower-cased. Any plain claim counts: `email`,
/// `preferred_username`, `upn`, `sub`, or `appid` / `oid` / `azp` for service
/// principals that have no e-mail. Non-string values are skipped.
///
/// `lookup` returns a claim's string value by name (`None` for absent or
/// non-string claims); [`username`] is the version for a claims object.
pub fn username_by<'a>(
    fields: &[String],
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, NoUsername> {
    fields
        .iter()
        .find_map(|field| {
            lookup(field)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase)
        })
        .ok_or_else(|| NoUsername {
            fields: fields.join(", "),
        })
}

/// [`username_by`] over a claims object (every claim of a token, `sub` included).
pub fn username(claims: &Map<String, Value>, fields: &[String]) -> Result<String, NoUsername> {
    username_by(fields, |name| claims.get(name).and_then(Value::as_str))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn fields(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_non_blank_string_in_field_order_lower_cased() {
        let c = claims(json!({"email": " Alice@Example.COM ", "preferred_username": "alice"}));
        assert_eq!(
            username(&c, &fields(&["email", "preferred_username"])),
            Ok("alice@example.com".to_string())
        );
        assert_eq!(
            username(&c, &fields(&["preferred_username", "email"])),
            Ok("alice".to_string())
        );
        let c = claims(json!({"email": "  ", "upn": 7, "preferred_username": "Bob"}));
        assert_eq!(
            username(&c, &fields(&["email", "upn", "preferred_username"])),
            Ok("bob".to_string())
        );
    }

    #[test]
    fn service_principals_by_sub_appid_or_oid() {
        let c = claims(json!({
            "sub": "Sub-1",
            "appid": "11111111-2222-3333-4444-555555555555",
            "oid": "AAAA-BBBB",
        }));
        assert_eq!(
            username(&c, &fields(&["email", "appid"])),
            Ok("11111111-2222-3333-4444-555555555555".to_string())
        );
        assert_eq!(
            username(&c, &fields(&["email", "oid", "sub"])),
            Ok("aaaa-bbbb".to_string())
        );
        assert_eq!(
            username(&c, &fields(&["email", "sub"])),
            Ok("sub-1".to_string())
        );
    }

    #[test]
    fn none_found_names_the_fields_tried() {
        let c = claims(json!({"sub": "123", "email": null, "upn": ["x"]}));
        let err = username(&c, &fields(&["email", "upn", "preferred_username"])).unwrap_err();
        assert_eq!(err.fields, "email, upn, preferred_username");
        assert!(err.to_string().contains("email, upn, preferred_username"));
        assert!(username(&c, &[]).is_err());
    }

    #[test]
    fn lookup_form_reads_claims_kept_elsewhere() {
        let sub = Some("U-9".to_string());
        let custom = claims(json!({"email": ""}));
        let lookup = |name: &str| {
            if name == "sub" {
                sub.as_deref()
            } else {
                custom.get(name).and_then(Value::as_str)
            }
        };
        assert_eq!(
            username_by(&fields(&["email", "sub"]), lookup),
            Ok("u-9".to_string())
        );
    }
}
