//! Turns findings into actions: the mode's default for certain findings and
//! hazards, per-rule overrides, the opt-out annotation, and leniency for
//! findings an UPDATE did not introduce and for objects a controller made.
//!
//! A denial is only useful where a person reads it. A controller whose Pod or
//! ReplicaSet is denied retries forever, and scaling, rolling and re-creating
//! pods silently stall; so what a controller makes is marked, never denied.

mod action;
mod verdict;

pub(crate) use action::{Action, Mode, Policy};

use crate::{
    object::{Kind, ObjectView, PodSpecRef},
    rules::{self, Context, Finding, RuleId},
};

/// The annotation listing rules an object opts out of, comma-separated.
pub(crate) const IGNORE_ANNOTATION: &str = "issuer-guard.io/ignore";

/// Why a deny became a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaxed {
    /// The old object of an UPDATE already had this finding.
    Existing,
    /// A controller made the object.
    ControllerMade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub finding: Finding,
    pub action: Action,
    /// Set when the finding would have been denied but is only labelled.
    pub relaxed: Option<Relaxed>,
}

/// Where an object comes from, as far as admission can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No controlling owner: a person or a pipeline submitted it.
    Submitted,
    /// A controller made it: its controlling owner, as `Kind/name`.
    Controller(String),
}

impl Origin {
    /// Reads the controlling `ownerReference`. Whether that owner exists is
    /// not checked: the garbage collector deletes objects whose controller
    /// is gone, and admission cannot look it up without an API call.
    pub fn of(obj: &ObjectView<'_>) -> Origin {
        match &obj.meta().controller {
            Some(owner) => Origin::Controller(format!("{}/{}", owner.kind, owner.name)),
            None => Origin::Submitted,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// In an exempt namespace: nothing was judged.
    pub exempt: bool,
    pub decided: Vec<Decided>,
    /// The controlling owner (`Kind/name`) of a controller-made object.
    pub made_by: Option<String>,
    /// Rules the object opted out of, with how many findings each hid.
    pub opted_out: Vec<(RuleId, usize)>,
    /// Entries of the opt-out annotation that name no rule.
    pub unknown_opt_outs: Vec<String>,
}

/// One object to judge, with what admission (or `check`) knows about it.
pub struct Subject<'o, 'a> {
    pub kind: Kind,
    pub namespace: &'o str,
    pub obj: &'o ObjectView<'a>,
    /// On an UPDATE, the object before the change.
    pub old: Option<&'o ObjectView<'a>>,
    pub origin: Origin,
}

/// Judges one object end to end, the same way for the webhook and `check`:
/// skips exempt namespaces, runs the rules on its pod spec and decides what
/// each finding does.
pub(crate) fn assess(policy: &Policy, ctx: &Context<'_>, subject: Subject<'_, '_>) -> Verdict {
    if policy.is_exempt(subject.namespace) {
        return Verdict {
            exempt: true,
            ..Verdict::default()
        };
    }
    let judge = |obj| {
        let pod = PodSpecRef::locate(subject.kind, obj)?;
        let mut findings = Vec::new();
        rules::judge(&pod, ctx, subject.namespace, &mut findings);
        Some((
            findings,
            pod.template_meta.annotations.get(IGNORE_ANNOTATION),
        ))
    };
    let Some((findings, ignore)) = judge(subject.obj) else {
        return Verdict::default();
    };
    let old = subject
        .old
        .map(|o| judge(o).map(|(f, _)| f).unwrap_or_default());
    decide(policy, findings, ignore, old.as_deref(), subject.origin)
}

/// Decides every finding. `old` holds the old object's findings on UPDATE.
pub(crate) fn decide(
    policy: &Policy,
    findings: Vec<Finding>,
    ignore: Option<&str>,
    old: Option<&[Finding]>,
    origin: Origin,
) -> Verdict {
    let mut verdict = Verdict {
        made_by: match origin {
            Origin::Controller(owner) => Some(owner),
            Origin::Submitted => None,
        },
        ..Verdict::default()
    };
    let mut ignored = [false; RuleId::ALL.len()];
    for entry in ignore
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match RuleId::parse(entry) {
            Some(rule) => {
                if !ignored[rule.index()] {
                    ignored[rule.index()] = true;
                    verdict.opted_out.push((rule, 0));
                }
            }
            None => verdict.unknown_opt_outs.push(entry.to_owned()),
        }
    }
    for finding in findings {
        if ignored[finding.rule.index()] {
            if let Some(entry) = verdict
                .opted_out
                .iter_mut()
                .find(|(r, _)| *r == finding.rule)
            {
                entry.1 += 1;
            }
            continue;
        }
        let mut action = policy.action(finding.rule, finding.certain);
        if action == Action::Off {
            continue;
        }
        let mut relaxed = None;
        if action == Action::Deny {
            // The finding stays visible as a label either way; an edit of an
            // existing object must not be refused for what it already had,
            // and a controller must never be refused at all.
            if old.is_some_and(|old| old.iter().any(|o| o.identity() == finding.identity())) {
                relaxed = Some(Relaxed::Existing);
            } else if verdict.made_by.is_some() {
                relaxed = Some(Relaxed::ControllerMade);
            }
            if relaxed.is_some() {
                action = Action::Label;
            }
        }
        verdict.decided.push(Decided {
            finding,
            action,
            relaxed,
        });
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::{action::default_action, *};

    /// Enforce mode with these per-rule overrides.
    fn policy(overrides: &[(RuleId, Action)]) -> Policy {
        let mut p = Policy {
            mode: Mode::Enforce,
            overrides: [None; RuleId::ALL.len()],
            exempt_namespaces: vec!["kube-system".into()],
        };
        for (rule, action) in overrides {
            p.overrides[rule.index()] = Some(*action);
        }
        p
    }

    fn finding(rule: RuleId, certain: bool, subject: &str) -> Finding {
        Finding {
            rule,
            certain,
            path: "spec.x".into(),
            subject: subject.into(),
            detail: "d".into(),
            message: "m".into(),
            short: "s",
        }
    }

    #[test]
    fn defaults_by_mode_and_certainty() {
        assert_eq!(default_action(Mode::Enforce, true), Action::Deny);
        assert_eq!(default_action(Mode::Enforce, false), Action::Label);
        assert_eq!(default_action(Mode::Audit, true), Action::Label);
        assert_eq!(default_action(Mode::Audit, false), Action::Label);
    }

    #[test]
    fn overrides_grandfathering_and_risks() {
        let config = policy(&[
            (RuleId::RefreshExceedsGrace, Action::Warn),
            (RuleId::LegacyTokenVolume, Action::Off),
        ]);
        let a = finding(RuleId::TokenSubpath, true, "container \"a\"");
        let b = finding(RuleId::RefreshExceedsGrace, false, "volume \"v\"");
        let c = finding(RuleId::LegacyTokenVolume, false, "volume \"w\"");
        let old = [a.clone()];
        let v = decide(
            &config,
            vec![a.clone(), b.clone(), c],
            None,
            Some(&old),
            Origin::Submitted,
        );
        let actions: Vec<(RuleId, Action, Option<Relaxed>)> = v
            .decided
            .iter()
            .map(|d| (d.finding.rule, d.action, d.relaxed))
            .collect();
        assert_eq!(
            actions,
            [
                (RuleId::TokenSubpath, Action::Label, Some(Relaxed::Existing)),
                (RuleId::RefreshExceedsGrace, Action::Warn, None)
            ]
        );
        assert!(!v.is_denied());
        assert_eq!(v.risks_value().as_deref(), Some("token-subpath"));
        let v = decide(&config, vec![b, a], None, None, Origin::Submitted);
        assert!(v.is_denied());
        assert_eq!(v.warnings().len(), 1);
    }

    #[test]
    fn controller_made_objects_are_marked_never_denied_nor_warned() {
        let config = policy(&[(RuleId::RefreshExceedsGrace, Action::Deny)]);
        let certain = finding(RuleId::TokenSubpath, true, "container \"a\"");
        let hazard = finding(RuleId::RefreshExceedsGrace, false, "volume \"v\"");
        let owner = Origin::Controller("ReplicaSet/web-7c9f8b6d5".into());
        let v = decide(
            &config,
            vec![certain.clone(), hazard.clone()],
            None,
            None,
            owner.clone(),
        );
        assert!(!v.is_denied());
        assert!(v.warnings().is_empty(), "{:?}", v.warnings());
        assert!(v.controller_at_risk());
        assert_eq!(v.made_by.as_deref(), Some("ReplicaSet/web-7c9f8b6d5"));
        assert_eq!(
            v.risks_value().as_deref(),
            Some("token-subpath,refresh-exceeds-grace")
        );
        // The override made the hazard a deny; both are relaxed the same way.
        assert!(
            v.decided
                .iter()
                .all(|d| d.relaxed == Some(Relaxed::ControllerMade)),
            "{:?}",
            v.decided
        );
        // An old object's finding is reported as existing, not as made.
        let v = decide(
            &config,
            vec![certain.clone()],
            None,
            Some(&[certain]),
            owner,
        );
        assert_eq!(v.decided[0].relaxed, Some(Relaxed::Existing));
        // The same findings, submitted by a person, are denied.
        let v = decide(&config, vec![hazard], None, None, Origin::Submitted);
        assert!(v.is_denied());
        assert!(!v.controller_at_risk());
    }

    #[test]
    fn origin_rests_on_the_controlling_owner_reference() {
        let read = |meta: &str| {
            let text = format!(r#"{{"metadata":{meta}}}"#);
            let obj: ObjectView = serde_json::from_str(&text).unwrap();
            Origin::of(&obj)
        };
        let controlled = r#"{"ownerReferences":[
            {"apiVersion":"v1","kind":"ConfigMap","name":"cm","uid":"1"},
            {"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-1","uid":"2","controller":true}]}"#;
        assert_eq!(
            read(controlled),
            Origin::Controller("ReplicaSet/web-1".into())
        );
        for submitted in [
            "{}",
            r#"{"ownerReferences":null}"#,
            r#"{"ownerReferences":[]}"#,
            r#"{"ownerReferences":[{"kind":"ReplicaSet","name":"web-1","controller":false}]}"#,
            r#"{"ownerReferences":[{"kind":"ReplicaSet","name":"web-1","controller":null}]}"#,
            r#"{"ownerReferences":[{"kind":"ReplicaSet","name":"web-1"}]}"#,
        ] {
            assert_eq!(read(submitted), Origin::Submitted, "{submitted}");
        }
    }

    #[test]
    fn opt_out_counts_hidden_findings() {
        let config = policy(&[]);
        let f = finding(RuleId::TokenSubpath, true, "container \"a\"");
        let v = decide(
            &config,
            vec![f.clone(), f],
            Some(" token-subpath ,token-subpath,bogus"),
            None,
            Origin::Submitted,
        );
        assert!(v.decided.is_empty());
        assert_eq!(v.opted_out, [(RuleId::TokenSubpath, 2)]);
        assert_eq!(v.unknown_opt_outs, ["bogus"]);
    }
}
