//! Audience patterns: an exact string, or a glob where `*` matches any run of
//! characters. Globs are enough for audiences such as
//! `//iam.googleapis.com/projects/*/workloadIdentityPools/*` and keep the
//! configuration readable; full regexes invite mistakes that silently match
//! nothing.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
}

impl Pattern {
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, text: &str) -> bool {
        glob_match(&self.source, text)
    }
}

/// Matches `text` against a glob where `*` stands for any run of characters,
/// without allocating: built-in audience patterns are checked per review.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts = parts.peekable();
    if parts.peek().is_none() {
        return rest.is_empty();
    }
    while let Some(piece) = parts.next() {
        if parts.peek().is_none() {
            return rest.ends_with(piece);
        }
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn exact_and_glob() {
        assert!(Pattern::new("sts.amazonaws.com").matches("sts.amazonaws.com"));
        assert!(!Pattern::new("sts.amazonaws.com").matches("sts.amazonaws.com.evil"));
        let gcp = Pattern::new("//iam.googleapis.com/projects/*/workloadIdentityPools/*");
        assert!(
            gcp.matches("//iam.googleapis.com/projects/123/workloadIdentityPools/p/providers/x")
        );
        assert!(!gcp.matches("//iam.googleapis.com/projects/123/other"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("a*a").matches("aa"));
        assert!(!Pattern::new("a*a").matches("a"));
        assert!(Pattern::new("vault-*").matches("vault-prod"));
    }
}
