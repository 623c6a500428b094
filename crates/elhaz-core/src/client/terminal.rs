//! Text from a daemon made safe for a terminal: control characters stripped.

/// Text from a daemon made safe for a terminal: control characters (C0 but tab and newline,
/// DEL, C1 — escape sequences, bells, carriage returns) removed. Every string of every reply
/// passes through this in [`decode_reply`], so error messages, MFA serials and notes the CLI
/// prints can never drive the user's terminal.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if s.contains(bad) {
        std::borrow::Cow::Owned(s.chars().filter(|c| !bad(*c)).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A reply payload with [`terminal_safe`] applied to every string in it. JSON can carry a
/// control character only as a `\u` escape, or raw for DEL and C1 (U+0080–U+009F, UTF-8
/// `C2 80`–`C2 9F`): a payload with none of those is returned as it is, without a second parse
/// (the credential-process hot path).
pub(super) fn strip_controls_in_payload(payload: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let suspicious = payload.windows(2).any(|w| {
        (w[0] == b'\\' && w[1] == b'u') || (w[0] == 0xC2 && (0x80..=0x9F).contains(&w[1]))
    }) || payload.contains(&0x7F);
    if !suspicious {
        return std::borrow::Cow::Borrowed(payload);
    }
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                if let std::borrow::Cow::Owned(clean) = terminal_safe(s) {
                    *s = clean;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => o.values_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(mut v) => {
            walk(&mut v);
            // Re-encoding a value we just parsed cannot fail.
            std::borrow::Cow::Owned(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => std::borrow::Cow::Borrowed(payload),
    }
}
