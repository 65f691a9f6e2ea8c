//! Which Secrets hold legacy service-account tokens: the index the rules
//! ask, filled from `check`'s input or the webhook's watch.

use std::collections::{HashMap, HashSet};

/// The Secret type of legacy service-account tokens.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Whether a Secret of this `type` is a legacy service-account token: the
/// one meaning `check`, the webhook's watch and the rules share. API
/// validation makes this type require the
/// `kubernetes.io/service-account.name` annotation and the token
/// controller fills only such Secrets, so the type is the sharper test; the
/// annotation alone, on an Opaque Secret, makes no token.
pub fn is_legacy_token_secret(secret_type: Option<&str>) -> bool {
    secret_type == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
}

/// The field selector that asks the API server for exactly the Secrets
/// [`is_legacy_token_secret`] accepts.
pub fn legacy_token_selector() -> String {
    format!("type={SERVICE_ACCOUNT_TOKEN_TYPE}")
}

/// Which Secrets hold legacy service-account tokens.
pub trait SecretIndex: Send + Sync {
    fn is_legacy_token(&self, namespace: &str, name: &str) -> bool;
}

/// A set of legacy token Secrets by namespace, looked up without allocating.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LegacySecrets {
    by_namespace: HashMap<String, HashSet<String>>,
}

impl LegacySecrets {
    pub fn insert(&mut self, namespace: &str, name: &str) {
        self.by_namespace
            .entry(namespace.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.by_namespace.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.by_namespace.remove(namespace);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }
}

impl SecretIndex for LegacySecrets {
    fn is_legacy_token(&self, namespace: &str, name: &str) -> bool {
        self.by_namespace
            .get(namespace)
            .is_some_and(|names| names.contains(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_remove() {
        let mut s = LegacySecrets::default();
        s.insert("ns", "default-token-abcde");
        assert!(s.is_legacy_token("ns", "default-token-abcde"));
        assert!(!s.is_legacy_token("other", "default-token-abcde"));
        assert_eq!(s.len(), 1);
        s.remove("ns", "default-token-abcde");
        assert!(s.is_empty());
    }
}
