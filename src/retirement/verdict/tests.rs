use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::{
    retirement::{Accounts, JudgedPod, LegacyToken, SecretKey},
    state::{Discovered, Generation, KeyState, Retired, SwitchTimes},
};

const OLD: &str = "https://old.example";
const NEW: &str = "https://new.example";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Key a to b completed at 12:00; issuer old to new in the same switch.
fn found() -> Discovered {
    let switch = |number, issuer: &str, key: &str, started: &str, completed: &str| SwitchTimes {
        number,
        issuer: issuer.into(),
        key_id: key.into(),
        started: t(started).as_second(),
        completed: Some(t(completed).as_second()),
    };
    Discovered {
        generation: Generation::new(2, NEW, "b"),
        retiring_issuers: vec![OLD.into()],
        retired_issuers: Vec::new(),
        next_issuer: None,
        keys: vec![
            ("a".into(), KeyState::Retiring),
            ("b".into(), KeyState::Signing),
        ],
        switches: vec![
            switch(1, OLD, "a", "2026-12-01T08:00:00Z", "2026-12-01T08:00:00Z"),
            switch(2, NEW, "b", "2026-12-01T11:50:00Z", "2026-12-01T12:00:00Z"),
        ],
        retirements: Vec::new(),
        candidate_issuers: Vec::new(),
        observed_at: 0,
    }
}

fn pod(name: &str, created: &str, ttls: &[i64], findings: &[(RuleId, &str)]) -> JudgedPod {
    JudgedPod {
        facts: PodFacts {
            namespace: "ns".into(),
            name: name.into(),
            owner: None,
            account: "default".into(),
            created: Some(t(created)),
            started: None,
            generation: None,
            ttls: ttls.to_vec(),
            has_token: true,
        },
        findings: findings
            .iter()
            .map(|(r, d)| (*r, (*d).to_owned()))
            .collect(),
    }
}

/// The verdicts with no ReplicaSets, ServiceAccounts or legacy Secrets
/// known.
fn decide(found: &Discovered, pods: &[JudgedPod], now: Timestamp) -> Vec<RetirementVerdict> {
    decide_with(found, pods, &BTreeMap::new(), now)
}

fn decide_with(
    found: &Discovered,
    pods: &[JudgedPod],
    legacy: &BTreeMap<SecretKey, LegacyToken>,
    now: Timestamp,
) -> Vec<RetirementVerdict> {
    super::decide(&Evidence {
        found,
        pods,
        deployments: &HashMap::new(),
        accounts: &Accounts::new(),
        legacy,
        now,
    })
}

fn verdict_for(v: &[RetirementVerdict], kind: Retiring, name: &str) -> Verdict {
    v.iter()
        .find(|r| r.kind == kind && r.name == name)
        .map(|r| r.verdict.clone())
        .unwrap()
}

/// A pod created in the very second the switch completed may predate it.
#[test]
fn a_pod_of_the_completions_second_is_not_taken_as_after() {
    let pods = [pod("same-second", "2026-12-01T12:00:00Z", &[3607], &[])];
    let v = decide(&found(), &pods, t("2026-12-01T12:01:00Z"));
    assert_eq!(
        verdict_for(&v, Retiring::Key, "a"),
        Verdict::SafeAfter {
            at: t("2026-12-01T12:53:05Z")
        }
    );
}

#[test]
fn pods_created_after_the_completion_are_safe_at_once() {
    let pods = [pod("p", "2026-12-01T12:00:01Z", &[3607], &[])];
    let v = decide(&found(), &pods, t("2026-12-01T12:01:00Z"));
    assert_eq!(verdict_for(&v, Retiring::Key, "a"), Verdict::SafeNow);
    assert_eq!(verdict_for(&v, Retiring::Issuer, OLD), Verdict::SafeNow);
}

/// The refresh rule: completion + min(0.8 × TTL, 24 h) + the margin, from
/// the longest projection of the pod, and the latest pod decides.
#[test]
fn pods_from_before_are_safe_once_their_tokens_refreshed() {
    let pods = [
        pod("hour", "2026-12-01T09:00:00Z", &[3607], &[]),
        pod("two-hours", "2026-12-01T09:00:00Z", &[600, 7200], &[]),
    ];
    let v = decide(&found(), &pods, t("2026-12-01T12:01:00Z"));
    // 0.8 × 7200 s = 96 min, + 5 min.
    assert_eq!(
        verdict_for(&v, Retiring::Key, "a"),
        Verdict::SafeAfter {
            at: t("2026-12-01T13:41:00Z")
        }
    );
    let week = [pod("week", "2026-12-01T09:00:00Z", &[7 * 24 * 3600], &[])];
    let v = decide(&found(), &week, t("2026-12-01T12:01:00Z"));
    assert_eq!(
        verdict_for(&v, Retiring::Key, "a"),
        Verdict::SafeAfter {
            at: t("2026-12-02T12:05:00Z")
        },
        "capped at 24 h"
    );
    let v = decide(&found(), &pods, t("2026-12-01T14:00:00Z"));
    assert_eq!(verdict_for(&v, Retiring::Key, "a"), Verdict::SafeNow);
}

#[test]
fn frozen_tokens_block_and_owners_group_their_pods() {
    let mut pods: Vec<JudgedPod> = (0..3)
        .map(|i| {
            let mut p = pod(
                &format!("web-{i}"),
                "2026-12-01T09:00:00Z",
                &[],
                &[(RuleId::TokenSubpath, "token")],
            );
            p.facts.owner = Some(("Deployment".into(), "web".into()));
            p
        })
        .collect();
    pods.push(pod(
        "irsa",
        "2026-12-01T13:00:00Z",
        &[3607],
        &[(RuleId::FederatedAudienceUntrusted, "sts.amazonaws.com")],
    ));
    let v = decide(&found(), &pods, t("2026-12-01T12:01:00Z"));
    let Verdict::BlockedBy { blockers } = verdict_for(&v, Retiring::Key, "a") else {
        panic!("blocked")
    };
    assert_eq!(
        blockers.len(),
        1,
        "the federated audience does not block a key: {blockers:?}"
    );
    assert_eq!(
        (blockers[0].kind.as_str(), blockers[0].pods.len()),
        ("Deployment", 3)
    );
    assert_eq!(
        blockers[0].remedy,
        "issuer-guard restart -n ns --owner deployment/web (by hand: kubectl rollout restart -n ns deployment/web)"
    );
    let Verdict::BlockedBy { blockers } = verdict_for(&v, Retiring::Issuer, OLD) else {
        panic!("blocked")
    };
    assert_eq!(blockers.len(), 2);
    assert!(
        blockers
            .iter()
            .any(|b| b.kind == "Pod" && b.remedy.contains("kubectl replace --force"))
    );
}

#[test]
fn a_pod_without_a_token_never_blocks_and_a_switch_not_completed_is_still_signing() {
    let mut p = pod(
        "quiet",
        "2026-12-01T09:00:00Z",
        &[],
        &[(RuleId::LegacyTokenEnv, "s")],
    );
    p.facts.has_token = false;
    let v = decide(&found(), &[p], t("2026-12-01T12:01:00Z"));
    assert_eq!(verdict_for(&v, Retiring::Key, "a"), Verdict::SafeNow);
    let mut rolling = found();
    rolling.switches[1].completed = None;
    let v = decide(&rolling, &[], t("2026-12-01T12:01:00Z"));
    assert_eq!(verdict_for(&v, Retiring::Key, "a"), Verdict::StillSigning);
}

#[test]
fn a_retirement_is_reported_with_its_source() {
    let mut f = found();
    f.retiring_issuers.clear();
    f.retired_issuers = vec![OLD.into()];
    f.retirements = vec![Retired {
        kind: "issuer",
        name: OLD.into(),
        at: t("2026-12-02T00:00:00Z").as_second(),
        source: "observed",
    }];
    let v = decide(&f, &[], t("2026-12-02T01:00:00Z"));
    let r = v.iter().find(|r| r.kind == Retiring::Issuer).unwrap();
    assert_eq!(r.retired, Some((t("2026-12-02T00:00:00Z"), "observed")));
    assert_eq!(r.switch_completed, Some(t("2026-12-01T12:00:00Z")));
}

/// A `subPath` copy is the token of its container's start: one taken after
/// the volume was refreshed (or in a pod made after the switch) holds the
/// new key; one taken before blocks.
#[test]
fn a_subpath_copy_blocks_only_when_taken_before_the_refresh() {
    let subpath = [(RuleId::TokenSubpath, "token")];
    let mut early = pod("early", "2026-12-01T09:00:00Z", &[3607], &subpath);
    early.facts.started = Some(t("2026-12-01T12:40:00Z"));
    let mut late = pod("late", "2026-12-01T09:00:00Z", &[3607], &subpath);
    // The volume is new from 12:53:05 (12:00 + 2885 s + 5 min).
    late.facts.started = Some(t("2026-12-01T12:53:06Z"));
    let mut new = pod("new", "2026-12-01T12:00:01Z", &[3607], &subpath);
    new.facts.started = None;
    let now = t("2026-12-01T13:00:00Z");
    let v = decide(&found(), &[early.clone(), late.clone(), new.clone()], now);
    let Verdict::BlockedBy { blockers } = verdict_for(&v, Retiring::Key, "a") else {
        panic!("blocked: {v:?}")
    };
    let names: Vec<&str> = blockers.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["early"]);
    let v = decide(&found(), &[late, new], now);
    assert_eq!(verdict_for(&v, Retiring::Key, "a"), Verdict::SafeNow);
}

fn token(name: &str, last_used: Option<&str>) -> ((String, String), LegacyToken) {
    (
        ("ns".into(), name.into()),
        LegacyToken {
            namespace: "ns".into(),
            name: name.into(),
            service_account: "bot".into(),
            last_used: last_used.map(str::to_owned),
            invalid_since: None,
        },
    )
}

/// Legacy tokens are verified by key alone: they block a key, never an
/// issuer. A Secret no pod mounts blocks the key while it is used.
#[test]
fn legacy_tokens_block_the_key_and_an_unmounted_one_only_when_used() {
    let frozen = pod(
        "frozen",
        "2026-12-01T13:00:00Z",
        &[],
        &[(RuleId::LegacyTokenEnv, "mounted")],
    );
    let legacy: BTreeMap<_, _> = [
        token("mounted", None),
        token("used", Some("2026-12-01")),
        token("idle", None),
    ]
    .into_iter()
    .collect();
    let v = decide_with(&found(), &[frozen], &legacy, t("2026-12-01T13:00:00Z"));
    assert_eq!(verdict_for(&v, Retiring::Issuer, OLD), Verdict::SafeNow);
    let Verdict::BlockedBy { blockers } = verdict_for(&v, Retiring::Key, "a") else {
        panic!("blocked: {v:?}")
    };
    let names: Vec<(&str, &str)> = blockers
        .iter()
        .map(|b| (b.kind.as_str(), b.name.as_str()))
        .collect();
    assert_eq!(names, [("Pod", "frozen"), ("Secret", "used")]);
    assert_eq!(blockers[1].rules, ["legacy-token-in-use"]);
    assert_eq!(blockers[1].details, ["last used 2026-12-01, by no pod"]);
}

/// kubernetes#106049: a pod older than its ServiceAccount started under an
/// earlier account of that name. Projected tokens heal at the kubelet's
/// next refresh; copies never do; healed pods are not listed.
#[test]
fn pods_older_than_their_service_account_are_reported_with_when_they_heal() {
    let mut projected = pod("projected", "2026-12-01T09:00:00Z", &[3607], &[]);
    projected.facts.account = "app".into();
    let mut copied = pod(
        "copied",
        "2026-12-01T09:00:00Z",
        &[3607],
        &[(RuleId::TokenSubpath, "token")],
    );
    copied.facts.account = "app".into();
    let mut younger = pod("younger", "2026-12-01T12:30:00Z", &[3607], &[]);
    younger.facts.account = "app".into();
    let mut orphan = pod("orphan", "2026-12-01T09:00:00Z", &[3607], &[]);
    orphan.facts.account = "gone".into();
    let accounts: Accounts = [(("ns".into(), "app".into()), t("2026-12-01T12:00:00Z"))]
        .into_iter()
        .collect();
    let pods = [projected, copied, younger, orphan];
    let evidence = |now| {
        Evidence {
            found: &found(),
            pods: &pods,
            deployments: &HashMap::new(),
            accounts: &accounts,
            legacy: &BTreeMap::new(),
            now,
        }
        .assess()
    };
    let a = evidence(t("2026-12-01T12:10:00Z"));
    type Row<'a> = (
        &'a str,
        Option<Timestamp>,
        Vec<(&'a str, Option<Timestamp>, bool)>,
    );
    let report: Vec<Row<'_>> = a
        .accounts
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.recreated,
                r.pods
                    .iter()
                    .map(|p| (p.name.as_str(), p.heals, p.broken_until_recreated))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        report,
        [
            (
                "app",
                Some(t("2026-12-01T12:00:00Z")),
                vec![
                    ("projected", Some(t("2026-12-01T12:53:05Z")), false),
                    ("copied", None, true)
                ]
            ),
            ("gone", None, vec![("orphan", None, false)]),
        ]
    );
    let later = evidence(t("2026-12-01T13:00:00Z"));
    assert_eq!(later.accounts[0].pods.len(), 1, "the projected pod healed");
}
