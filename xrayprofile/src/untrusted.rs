//! Text from outside the function (trace headers, request IDs, ARNs,
//! environment values, S3's error messages) on its way into a log line.

/// Shortens untrusted text for a log line; the caller logs it with `?` so
/// control characters are escaped.
pub(crate) fn truncate_for_log(text: &str) -> &str {
    const MAX: usize = 128;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => text.get(..end).unwrap_or_default(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(500);
        assert_eq!(truncate_for_log(&long).chars().count(), 128);
        assert_eq!(truncate_for_log("short"), "short");
    }
}
