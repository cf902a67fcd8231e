//! Where an artifact path or a model-version source points: the experiment whose
//! artifacts it is, read the way MLflow reads the path.
//!
//! MLflow decodes an artifact path until it stops changing (`validate_path_is_safe`),
//! refuses `..` segments and absolute paths, and keeps `.` and empty segments, which
//! the artifact store then resolves away. The proxied artifact root holds one folder
//! per experiment id, so the first canonical segment names the experiment.

use super::request::{bad, decode_fully};
use super::RequestError;
use crate::permission::Target;

/// Where an artifact path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// The artifact root itself (a listing of every experiment's folder).
    Root,
    /// Inside the folder of this experiment.
    Experiment(String),
    /// Inside a folder that is no canonical experiment id (`workspaces/...`,
    /// `01`, a name): what it holds is not known to the filter.
    Elsewhere(String),
}

/// The canonical segments of an artifact path, as MLflow would reach it.
pub(crate) fn canonical_segments(path: &str, what: &str) -> Result<Vec<String>, RequestError> {
    let decoded = decode_fully(path, what)?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err(bad(format!(
            "the {what} has control characters once decoded"
        )));
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                return Err(bad(format!(
                    "the {what} {path:?} has a '..' segment, which mlflow refuses"
                )))
            }
            s => segments.push(s.to_string()),
        }
    }
    Ok(segments)
}

/// A canonical experiment id: digits, no leading zero (`0` itself is the default
/// experiment).
pub(crate) fn is_experiment_id(segment: &str) -> bool {
    !segment.is_empty()
        && segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'))
}

/// Where an artifact path (relative to the proxied artifact root) points.
pub(crate) fn place(path: &str, what: &str) -> Result<Place, RequestError> {
    let segments = canonical_segments(path, what)?;
    Ok(match segments.first() {
        None => Place::Root,
        Some(first) if is_experiment_id(first) => Place::Experiment(first.clone()),
        Some(first) => Place::Elsewhere(first.clone()),
    })
}

/// What a model-version `source` names, when the filter can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceRef {
    /// A run, a logged model, a registered model, or an experiment's artifacts.
    Target(Target),
    /// Nothing the filter can check (another scheme, a local path, a malformed URI).
    Unknown,
}

/// The scheme of a URI as Python's `urlparse` finds it (lower-cased), and the rest.
fn scheme(uri: &str) -> Option<(String, &str)> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), rest))
}

/// Splits `//authority/path` into the authority and the path; a bare path has none.
fn authority(rest: &str) -> (&str, &str) {
    match rest.strip_prefix("//") {
        Some(after) => match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        },
        None => ("", rest),
    }
}

/// What a `CreateModelVersion` source names: `runs:/<run_id>/...` a run,
/// `models:/<model_id>` a logged model, `models:/<name>/<version>` (or `@alias`,
/// a stage, `latest`) a registered model, `mlflow-artifacts:/<experiment>/...` or
/// `http(s)://host/api/2.0/mlflow-artifacts/artifacts/<experiment>/...` an
/// experiment's artifacts. Query strings, fragments and parameters are not expected in
/// any of them: such a source names nothing the filter can check.
pub(crate) fn source(uri: &str) -> Result<SourceRef, RequestError> {
    // Python's `urlparse` strips leading blanks and drops tabs and newlines: such a
    // source is not what it looks like.
    if uri.trim() != uri || uri.chars().any(|c| c.is_control()) {
        return Ok(SourceRef::Unknown);
    }
    let Some((scheme, rest)) = scheme(uri) else {
        return Ok(SourceRef::Unknown);
    };
    match scheme.as_str() {
        "runs" | "models" => {
            if rest.contains(['?', '#', ';', '%']) {
                return Ok(SourceRef::Unknown);
            }
            let (netloc, path) = authority(rest);
            if !netloc.is_empty() || !path.starts_with('/') || path.len() <= 1 {
                return Ok(SourceRef::Unknown);
            }
            if scheme == "runs" {
                let run_id = path[1..].split('/').next().unwrap_or("");
                if run_id.is_empty() {
                    return Ok(SourceRef::Unknown);
                }
                return Ok(SourceRef::Target(Target::Run { id: run_id.into() }));
            }
            // `_parse_model_uri`: leading slashes stripped, at most two parts.
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            if parts.len() > 2 || parts[0].trim().is_empty() {
                return Ok(SourceRef::Unknown);
            }
            if parts.len() == 2 {
                if parts[1].trim().is_empty() {
                    return Ok(SourceRef::Unknown);
                }
                return Ok(SourceRef::Target(Target::RegisteredModel {
                    name: parts[0].into(),
                }));
            }
            if let Some((name, alias)) = parts[0].rsplit_once('@') {
                if alias.trim().is_empty() {
                    return Ok(SourceRef::Unknown);
                }
                return Ok(SourceRef::Target(Target::RegisteredModel {
                    name: name.into(),
                }));
            }
            Ok(SourceRef::Target(Target::LoggedModel {
                id: parts[0].into(),
            }))
        }
        "mlflow-artifacts" => {
            if rest.contains(['?', '#', ';']) {
                return Ok(SourceRef::Unknown);
            }
            let (_, path) = authority(rest);
            experiment_of(path)
        }
        "http" | "https" => {
            if rest.contains(['?', '#', ';']) {
                return Ok(SourceRef::Unknown);
            }
            let (_, path) = authority(rest);
            let segments = canonical_segments(path, "model version source")?;
            let route = ["api", "2.0", "mlflow-artifacts", "artifacts"];
            let at = segments
                .windows(route.len())
                .position(|w| w.iter().zip(route).all(|(a, b)| a == b));
            match at {
                Some(i) => experiment_of(&segments[i + route.len()..].join("/")),
                None => Ok(SourceRef::Unknown),
            }
        }
        _ => Ok(SourceRef::Unknown),
    }
}

fn experiment_of(path: &str) -> Result<SourceRef, RequestError> {
    Ok(match place(path, "model version source")? {
        Place::Experiment(id) => SourceRef::Target(Target::Experiment { id }),
        Place::Root | Place::Elsewhere(_) => SourceRef::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn exp(id: &str) -> Place {
        Place::Experiment(id.into())
    }

    #[test]
    fn the_first_canonical_segment_names_the_experiment() {
        assert_eq!(place("1/abc/file.txt", "p").unwrap(), exp("1"));
        assert_eq!(place("./1//abc/./file.txt", "p").unwrap(), exp("1"));
        assert_eq!(place("//1/abc", "p").unwrap(), exp("1"));
        assert_eq!(place("", "p").unwrap(), Place::Root);
        assert_eq!(place(".", "p").unwrap(), Place::Root);
        assert_eq!(place("./", "p").unwrap(), Place::Root);
        assert_eq!(place("0/x", "p").unwrap(), exp("0"));
        assert_eq!(place("01/x", "p").unwrap(), Place::Elsewhere("01".into()));
        assert_eq!(
            place("workspaces/team/1/x", "p").unwrap(),
            Place::Elsewhere("workspaces".into())
        );
        assert_eq!(place("abc", "p").unwrap(), Place::Elsewhere("abc".into()));
    }

    #[test]
    fn artifact_paths_are_decoded_as_mlflow_decodes_them() {
        // MLflow decodes until stable: `%2531` is `%31` to the router, `1` to MLflow.
        assert_eq!(place("%31/x", "p").unwrap(), exp("1"));
        assert_eq!(place("%2531/x", "p").unwrap(), exp("1"));
        assert!(place("2%2F..%2F1/x", "p")
            .unwrap_err()
            .message
            .contains("'..'"));
        assert!(place("1/%252e%252e/2", "p").is_err());
    }

    #[test]
    fn dot_dot_is_refused_anywhere() {
        for p in ["../1/x", "1/../2/x", "1/a/../b", ".."] {
            let e = place(p, "artifact path").unwrap_err().message;
            assert!(
                e.contains("'..'") && e.contains("artifact path"),
                "{p}: {e}"
            );
        }
        // Not a `..` segment: a file name.
        assert_eq!(place("1/..x/y", "p").unwrap(), exp("1"));
    }

    #[test]
    fn model_version_sources_name_runs_models_and_experiments() {
        let t = |s: &str| match source(s).unwrap() {
            SourceRef::Target(t) => Some(t),
            SourceRef::Unknown => None,
        };
        assert_eq!(t("runs:/abc/model"), Some(Target::Run { id: "abc".into() }));
        assert_eq!(t("runs:/abc"), Some(Target::Run { id: "abc".into() }));
        assert_eq!(t("runs://host/abc/model"), None);
        assert_eq!(t("runs:/"), None);
        assert_eq!(
            t("models:/m-123"),
            Some(Target::LoggedModel { id: "m-123".into() })
        );
        assert_eq!(
            t("models:/my-model/3"),
            Some(Target::RegisteredModel {
                name: "my-model".into()
            })
        );
        assert_eq!(
            t("models:/my-model@champion"),
            Some(Target::RegisteredModel {
                name: "my-model".into()
            })
        );
        assert_eq!(t("models:/a/b/c"), None);
        assert_eq!(
            t("mlflow-artifacts:/7/run/artifacts/model"),
            Some(Target::Experiment { id: "7".into() })
        );
        assert_eq!(
            t("mlflow-artifacts://host:5000/7/models/m-1/artifacts"),
            Some(Target::Experiment { id: "7".into() })
        );
        assert_eq!(
            t("https://host/api/2.0/mlflow-artifacts/artifacts/7/x"),
            Some(Target::Experiment { id: "7".into() })
        );
        assert_eq!(t("https://host/other/7/x"), None);
        assert_eq!(t("s3://bucket/7/x"), None);
        assert_eq!(t("/tmp/model"), None);
        assert_eq!(t("file:///tmp/model"), None);
        assert_eq!(t("dummy-source"), None);
        assert_eq!(t("mlflow-artifacts:/workspaces/w/7/x"), None);
        assert!(source("mlflow-artifacts:/7/../8/x").is_err());
    }
}
