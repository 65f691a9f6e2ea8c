//! The judged pods, kept in one contiguous slice so that an assessment
//! reads them as the CLI's list does, with an index by namespace and name
//! for the watch's changes.

use std::collections::HashMap;

use crate::retirement::JudgedPod;

#[derive(Debug, Default)]
pub(super) struct PodTable {
    pods: Vec<JudgedPod>,
    index: HashMap<(String, String), usize>,
}

impl PodTable {
    pub(super) fn put(&mut self, pod: JudgedPod) {
        let key = (pod.facts.namespace.clone(), pod.facts.name.clone());
        match self.index.get(&key) {
            Some(&i) => self.pods[i] = pod,
            None => {
                self.index.insert(key, self.pods.len());
                self.pods.push(pod);
            }
        }
    }

    pub(super) fn remove(&mut self, namespace: &str, name: &str) {
        let Some(i) = self.index.remove(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        self.pods.swap_remove(i);
        // The last pod took the removed one's place.
        if let Some(moved) = self.pods.get(i) {
            let key = (moved.facts.namespace.clone(), moved.facts.name.clone());
            self.index.insert(key, i);
        }
    }

    pub(super) fn pods(&self) -> &[JudgedPod] {
        &self.pods
    }

    pub(super) fn len(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retirement::judge_pod;
    use serde_json::json;

    fn pod(name: &str) -> JudgedPod {
        let value = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "ns", "name": name}, "spec": {"containers": [{"name": "c"}]}});
        judge_pod(
            &crate::config::Config::embedded_default(),
            crate::judge::Known::secrets(&crate::rules::LegacySecrets::default()),
            &value,
        )
        .unwrap()
    }

    fn names(t: &PodTable) -> Vec<&str> {
        let mut n: Vec<&str> = t.pods().iter().map(|p| p.facts.name.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn put_replace_and_remove_keep_the_index_true() {
        let mut t = PodTable::default();
        for n in ["a", "b", "c"] {
            t.put(pod(n));
        }
        t.put(pod("b"));
        assert_eq!(t.len(), 3);
        t.remove("ns", "a");
        assert_eq!(names(&t), ["b", "c"]);
        // "c" moved into "a"'s slot: removing it must find it there.
        t.remove("ns", "c");
        assert_eq!(names(&t), ["b"]);
        t.remove("ns", "missing");
        t.remove("other", "b");
        assert_eq!(names(&t), ["b"]);
        t.remove("ns", "b");
        assert_eq!(t.len(), 0);
    }
}
