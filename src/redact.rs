//! Process-wide secret redaction: every secret value resolved is registered
//! here, and every string that leaves the process (logs, JSON output, state
//! rows, notifications, script `print`) passes through [`scrub`].

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// The text that replaces a secret.
pub const MASK: &str = "***";

/// Register a secret value so that it is masked from now on, also where it
/// is printed JSON-escaped (a `"` or `\` in it, in a `--log-format json`
/// line). Values shorter than 4 bytes are not registered (they would mask
/// ordinary text) but are still never printed by the code that holds them.
pub fn register(secret: &str) {
    let s = secret.trim();
    if s.len() < 4 {
        return;
    }
    let quoted = serde_json::to_string(s).unwrap_or_default();
    let escaped = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or(s);
    let mut v = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    let mut added = false;
    for form in [s, escaped] {
        if !v.iter().any(|x| x == form) {
            v.push(form.to_string());
            added = true;
        }
    }
    if added {
        // Longest first, so a secret containing another is masked whole.
        v.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// Mask every registered secret in `text`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let v = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if v.is_empty() || !v.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in v.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// Mask secrets in every string of a JSON value, recursively.
pub fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(o) = scrub(s) {
                *s = o;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(m) => m.values_mut().for_each(scrub_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_longest_first() {
        register("hunter2-sentinel");
        register("hunter2-sentinel-long");
        assert_eq!(scrub("a hunter2-sentinel-long b"), "a *** b");
        assert_eq!(scrub("x hunter2-sentinel y"), "x *** y");
        assert_eq!(scrub("nothing here"), "nothing here");
    }

    #[test]
    fn json_escaped_forms_are_masked_too() {
        register("quo\"te-sentinel\\x");
        assert_eq!(
            scrub(r#"{"m":"a quo\"te-sentinel\\x b"}"#),
            r#"{"m":"a *** b"}"#
        );
        assert_eq!(scrub("a quo\"te-sentinel\\x b"), "a *** b");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("ab");
        assert_eq!(scrub("ab cd"), "ab cd");
    }
}
