//! The `tinygate:` keys that say how a client's request is read at the
//! edge: path normalisation (`merge_slashes`,
//! `path_with_escaped_slashes_action`) and the lingering close after a
//! refusal (`lingering_time`, `lingering_timeout`). Values land in
//! [`ClientLimits`]; the normaliser itself is `http::uri`.

use super::tree::{Obj, Problems};
use super::ClientLimits;
use crate::http::uri::EscapedSlashes;
use std::time::Duration;

/// The keys this file reads, for the `tinygate:` key check.
pub(super) const KEYS: &[&str] = &[
    "merge_slashes",
    "path_with_escaped_slashes_action",
    "lingering_time",
    "lingering_timeout",
];

/// Reads this file's keys from the `tinygate:` section into `limits`.
pub(super) fn parse(t: &Obj, limits: &mut ClientLimits, p: &mut Problems) {
    if let Some(s) = t.seconds("lingering_time", p) {
        limits.lingering_time = Duration::from_secs_f64(s);
    }
    if let Some(s) = t.seconds("lingering_timeout", p) {
        limits.lingering_timeout = Duration::from_secs_f64(s);
    }
    if let Some(merge) = t.bool("merge_slashes", p) {
        limits.paths.merge_slashes = merge;
    }
    let key = "path_with_escaped_slashes_action";
    limits.paths.escaped_slashes = match t.str(key, p) {
        None | Some("keep_unchanged") => EscapedSlashes::KeepUnchanged,
        Some("reject_request") => EscapedSlashes::RejectRequest,
        Some("unescape_and_forward") => EscapedSlashes::UnescapeAndForward,
        Some(other) => {
            p.at(
                &t.path_of(key),
                format!(
                    "expected keep_unchanged, reject_request or unescape_and_forward, got {other:?}"
                ),
            );
            EscapedSlashes::KeepUnchanged
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::uri::PathOptions;

    /// Parses a `tinygate` section given as YAML.
    fn check(yaml: &str) -> Result<ClientLimits, Vec<String>> {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut p = Problems::new("config.yaml");
        let t = Obj::new(&doc, "tinygate".into(), &mut p).unwrap();
        let mut limits = ClientLimits::default();
        parse(&t, &mut limits, &mut p);
        if p.is_empty() {
            Ok(limits)
        } else {
            Err(p.into_vec())
        }
    }

    #[test]
    fn paths_and_lingering_close_settings() {
        assert_eq!(check("{}").unwrap().paths, PathOptions::default());
        let limits = check("lingering_time: 2\nlingering_timeout: 0.5").unwrap();
        assert_eq!(limits.lingering_time, Duration::from_secs(2));
        assert_eq!(limits.lingering_timeout, Duration::from_millis(500));
        let limits =
            check("merge_slashes: false\npath_with_escaped_slashes_action: reject_request")
                .unwrap();
        assert_eq!(
            limits.paths,
            PathOptions {
                merge_slashes: false,
                escaped_slashes: EscapedSlashes::RejectRequest,
            }
        );
    }

    #[test]
    fn bad_path_settings_are_reported_with_their_path() {
        assert_eq!(
            check("merge_slashes: 1\npath_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT"),
            Err(vec![
                "config.yaml: tinygate.merge_slashes: expected true or false, got an integer".to_string(),
                "config.yaml: tinygate.path_with_escaped_slashes_action: expected keep_unchanged, reject_request or unescape_and_forward, got \"UNESCAPE_AND_REDIRECT\"".to_string(),
            ])
        );
    }
}
