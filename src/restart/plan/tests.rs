use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::retirement::{Blocker, RetirementVerdict, Retiring};

fn blocker(kind: &str, name: &str, pods: &[&str]) -> Blocker {
    Blocker {
        kind: kind.into(),
        namespace: "ns".into(),
        name: name.into(),
        pods: pods.iter().map(|p| (*p).to_owned()).collect(),
        rules: vec!["token-subpath"],
        details: Vec::new(),
        remedy: String::new(),
    }
}

fn assessment(blockers: Vec<Blocker>) -> Assessment {
    Assessment {
        per_generation: BTreeMap::new(),
        at_risk: BTreeMap::new(),
        verdicts: vec![
            RetirementVerdict {
                kind: Retiring::Key,
                name: "a".into(),
                switch_completed: None,
                retired: None,
                verdict: Verdict::BlockedBy {
                    blockers: blockers.clone(),
                },
            },
            // The same owners block the issuer too: one step each.
            RetirementVerdict {
                kind: Retiring::Issuer,
                name: "https://old".into(),
                switch_completed: None,
                retired: None,
                verdict: Verdict::BlockedBy { blockers },
            },
        ],
        accounts: Vec::new(),
        legacy: Vec::new(),
    }
}

fn methods(steps: &[Step]) -> Vec<(&str, &Method)> {
    steps.iter().map(|s| (s.name.as_str(), &s.method)).collect()
}

#[test]
fn every_owner_gets_one_step_with_its_way() {
    let a = assessment(vec![
        blocker("Deployment", "web", &["web-1", "web-2"]),
        blocker("ReplicationController", "legacy", &["legacy-x"]),
        blocker("StatefulSet", "db", &["db-0"]),
        blocker("StatefulSet", "manual", &["manual-0"]),
        blocker("Pod", "bare", &["bare"]),
        blocker("Job", "batch", &["batch-x"]),
        blocker("Secret", "ci-token", &[]),
        blocker("Widget", "custom", &["custom-x"]),
    ]);
    let on_delete: HashSet<_> = [("ns".to_owned(), "manual".to_owned())].into();
    let steps = plan(&a, &[], &Filters::default(), Strategy::Rolling, &on_delete);
    assert_eq!(steps.len(), 8, "one step per owner, not per verdict");
    let m: BTreeMap<&str, &Method> = methods(&steps).into_iter().collect();
    assert_eq!(m["web"], &Method::RolloutRestart);
    assert_eq!(m["legacy"], &Method::RollingReplace);
    assert_eq!(m["db"], &Method::RolloutRestart);
    assert_eq!(m["manual"], &Method::Evict);
    assert_eq!(m["bare"], &Method::Recreate);
    assert!(matches!(m["batch"], Method::Skip(_)));
    assert!(matches!(m["ci-token"], Method::Skip(_)));
    assert_eq!(m["custom"], &Method::Evict);
    let web = steps.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.pods, ["web-1", "web-2"]);

    let steps = plan(&a, &[], &Filters::default(), Strategy::Recreate, &on_delete);
    let legacy = steps.iter().find(|s| s.name == "legacy").unwrap();
    assert_eq!(legacy.method, Method::ScaleToZero);
    assert!(legacy.disruption.starts_with("downtime"));
}

#[test]
fn filters_narrow_to_an_owner_and_a_generation() {
    let a = assessment(vec![
        blocker("Deployment", "web", &["web-1", "web-2"]),
        blocker("Pod", "bare", &["bare"]),
    ]);
    let only_web = Filters {
        owner: Some(("deployment".into(), "web".into())),
        generation: None,
    };
    let steps = plan(&a, &[], &only_web, Strategy::Rolling, &HashSet::new());
    assert_eq!(methods(&steps), [("web", &Method::RolloutRestart)]);
    // No pod is known to be stamped 7: nothing is chosen.
    let seventh = Filters {
        owner: None,
        generation: Some(7),
    };
    assert!(plan(&a, &[], &seventh, Strategy::Rolling, &HashSet::new()).is_empty());
}
