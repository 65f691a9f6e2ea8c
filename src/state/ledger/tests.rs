use super::*;
use crate::state::{Discovered, KeyState};

const OLD: &str = "https://old.example";
const NEW: &str = "https://new.example";
const WINDOW: Window = Window(Duration::from_secs(300));

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn server(issuer: &str, kid: &str, verifying: &[&str]) -> ServerSeen {
    ServerSeen {
        issuer: issuer.to_owned(),
        key_id: kid.to_owned(),
        verifying: verifying.iter().map(|k| k.to_string()).collect(),
        accepted_issuers: None,
    }
}

/// A round of every server.
fn every(seconds: i64, servers: Vec<ServerSeen>) -> Round {
    Round {
        at: at(seconds),
        servers,
        coverage: Coverage::Every,
        canaries: Vec::new(),
    }
}

/// A round through one address.
fn one(seconds: i64, s: ServerSeen) -> Round {
    Round {
        at: at(seconds),
        servers: vec![s],
        coverage: Coverage::OneAddress,
        canaries: Vec::new(),
    }
}

fn declared(first: u64) -> Declared {
    Declared {
        first_number: first,
        ..Declared::default()
    }
}

fn observe(l: &mut Ledger, round: Round) -> Vec<Event> {
    l.observe_round(&round, &declared(1), WINDOW).1
}

fn number(l: &Ledger) -> Option<u64> {
    l.conclude(WINDOW).map(|d| d.generation.number)
}

#[track_caller]
fn assert_observed_retired(events: &[Event], issuer: &str) {
    let retired = Event::Retired {
        kind: RetiredKind::Issuer,
        name: issuer.into(),
        source: Source::Observed,
    };
    assert!(events.contains(&retired), "{events:?}");
}

fn state_of(d: &Discovered, kid: &str) -> Option<KeyState> {
    d.keys.iter().find(|(k, _)| k == kid).map(|(_, s)| *s)
}

#[test]
fn a_first_round_of_every_server_numbers_and_completes_its_pair() {
    let mut l = Ledger::default();
    assert!(l.conclude(WINDOW).is_none());
    let (changed, events) = l.observe_round(
        &every(0, vec![server(OLD, "a", &["a"]), server(OLD, "a", &["a"])]),
        &declared(4),
        WINDOW,
    );
    assert!(changed);
    assert_eq!(number(&l), Some(4));
    assert_eq!(l.generations[0].completed, Some(at(0)));
    assert!(
        matches!(
            events[..],
            [
                Event::SwitchStarted { number: 4, .. },
                Event::SwitchCompleted { number: 4, .. }
            ]
        ),
        "{events:?}"
    );
    // Seen again soon after: nothing to write.
    let (changed, _) = l.observe_round(
        &every(10, vec![server(OLD, "a", &["a"])]),
        &declared(4),
        WINDOW,
    );
    assert!(!changed);
}

/// Rolled one server at a time: the switch starts with the first server,
/// completes with the last, on the API server's clock; the stamp moves only
/// then, and a round from before the completion is no rollback.
#[test]
fn a_switch_starts_with_the_first_server_and_completes_with_the_last() {
    let mut l = Ledger::default();
    observe(
        &mut l,
        every(
            0,
            vec![server(OLD, "a", &["a", "b"]), server(OLD, "a", &["a", "b"])],
        ),
    );
    let events = observe(
        &mut l,
        every(
            100,
            vec![server(OLD, "a", &["a", "b"]), server(NEW, "b", &["a", "b"])],
        ),
    );
    assert!(
        matches!(events[..], [Event::SwitchStarted { number: 2, .. }]),
        "{events:?}"
    );
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        d.generation.number, 1,
        "the stamp stays until every server signs"
    );
    assert_eq!(
        d.next_issuer.as_deref(),
        Some(NEW),
        "the old issuer is retiring"
    );
    assert_eq!(d.switches[1].started, at(100).as_second());
    assert_eq!(d.switches[1].completed, None);
    // Still split: no change to the switch.
    observe(
        &mut l,
        every(
            130,
            vec![server(NEW, "b", &["a", "b"]), server(OLD, "a", &["a", "b"])],
        ),
    );
    assert_eq!(number(&l), Some(1));
    let events = observe(
        &mut l,
        every(
            160,
            vec![server(NEW, "b", &["a", "b"]), server(NEW, "b", &["a", "b"])],
        ),
    );
    assert!(
        matches!(events[..], [Event::SwitchCompleted { number: 2, .. }]),
        "{events:?}"
    );
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!((d.generation.number, d.next_issuer.as_deref()), (2, None));
    assert_eq!(d.switches[1].completed, Some(at(160).as_second()));
    assert_eq!(d.retiring_issuers, [OLD]);
    // Another replica's round, in flight while the switch completed.
    let events = observe(&mut l, every(150, vec![server(OLD, "a", &["a", "b"])]));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(l.generations.len(), 2);
}

#[test]
fn a_pair_that_signs_again_after_its_switch_completed_is_a_new_generation() {
    let mut l = Ledger::default();
    observe(&mut l, every(0, vec![server(OLD, "a", &["a", "b"])]));
    observe(&mut l, every(100, vec![server(OLD, "b", &["a", "b"])]));
    assert_eq!(number(&l), Some(2));
    let events = observe(&mut l, every(400, vec![server(OLD, "a", &["a", "b"])]));
    assert!(
        events.contains(&Event::SignsAgain { number: 3, was: 1 }),
        "{events:?}"
    );
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.number, d.generation.key_id.as_str()),
        (3, "a")
    );
    // Numbers are never given twice: the pair of 1 is now 3.
    assert_eq!(
        l.generations.iter().map(|g| g.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(l.check(Some(at(400))).is_ok());
}

/// Through one address the servers cannot be told apart: a switch
/// completes once no other pair has been seen for a window.
#[test]
fn through_one_address_a_switch_completes_after_a_quiet_window() {
    let mut l = Ledger::default();
    observe(&mut l, one(0, server(OLD, "a", &["a", "b"])));
    assert_eq!(number(&l), Some(1));
    observe(&mut l, one(10, server(OLD, "b", &["a", "b"])));
    observe(&mut l, one(20, server(OLD, "a", &["a", "b"])));
    observe(&mut l, one(30, server(OLD, "b", &["a", "b"])));
    assert_eq!(number(&l), Some(1), "the old pair was seen 10 s ago");
    observe(&mut l, one(319, server(OLD, "b", &["a", "b"])));
    assert_eq!(number(&l), Some(1), "299 s is within the window");
    observe(&mut l, one(320, server(OLD, "b", &["a", "b"])));
    assert_eq!(number(&l), Some(2));
    assert_eq!(l.generations[1].completed, Some(at(320)));
}

#[test]
fn keys_go_staged_signing_retiring_retired_observed() {
    let mut l = Ledger::default();
    observe(&mut l, every(0, vec![server(OLD, "a", &["a"])]));
    observe(&mut l, every(10, vec![server(OLD, "a", &["a", "b"])]));
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(state_of(&d, "b"), Some(KeyState::Staged));
    observe(&mut l, every(20, vec![server(OLD, "b", &["a", "b"])]));
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (state_of(&d, "a"), state_of(&d, "b")),
        (Some(KeyState::Retiring), Some(KeyState::Signing))
    );
    // One server still lists a: not yet retired.
    observe(
        &mut l,
        every(
            30,
            vec![server(OLD, "b", &["b"]), server(OLD, "b", &["a", "b"])],
        ),
    );
    assert_eq!(
        state_of(&l.conclude(WINDOW).unwrap(), "a"),
        Some(KeyState::Retiring)
    );
    let events = observe(
        &mut l,
        every(40, vec![server(OLD, "b", &["b"]), server(OLD, "b", &["b"])]),
    );
    assert!(
        events.contains(&Event::Retired {
            kind: RetiredKind::Key,
            name: "a".into(),
            source: Source::Observed
        }),
        "{events:?}"
    );
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(state_of(&d, "a"), Some(KeyState::Retired));
    assert_eq!(
        (d.retirements[0].kind, d.retirements[0].at),
        ("key", at(40).as_second())
    );
}

/// kOps: [old,new] -> [new,old] -> [new]. Where the API audiences are the
/// issuers, the last step is seen with no declaration.
#[test]
fn an_issuer_no_server_accepts_is_retired_observed() {
    let accepting = |issuer: &str, accepted: &[&str]| ServerSeen {
        accepted_issuers: Some(accepted.iter().map(|a| a.to_string()).collect()),
        ..server(issuer, "a", &["a"])
    };
    let mut l = Ledger::default();
    observe(&mut l, every(0, vec![accepting(OLD, &[OLD, NEW])]));
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        d.candidate_issuers,
        [NEW],
        "accepted, never signed: only a candidate"
    );
    observe(&mut l, every(10, vec![accepting(NEW, &[NEW, OLD])]));
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.number, d.retiring_issuers.as_slice()),
        (2, &[OLD.to_owned()][..])
    );
    let events = observe(&mut l, every(20, vec![accepting(NEW, &[NEW])]));
    assert_observed_retired(&events, OLD);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.retiring_issuers.len(), d.retired_issuers.as_slice()),
        (0, &[OLD.to_owned()][..])
    );
    assert_eq!(d.retirements[0].source, "observed");
}

#[test]
fn a_declared_retirement_is_recorded_and_one_the_servers_contradict_is_said() {
    let mut l = Ledger::default();
    let still = |issuer: &str| ServerSeen {
        accepted_issuers: Some(vec![NEW.to_owned(), OLD.to_owned()]),
        ..server(issuer, "a", &["a"])
    };
    let word = Declared {
        retired_issuers: vec![OLD.to_owned()],
        ..declared(1)
    };
    l.observe_round(&every(0, vec![still(OLD)]), &word, WINDOW);
    let (_, events) = l.observe_round(&every(10, vec![still(NEW)]), &word, WINDOW);
    assert!(
        events.contains(&Event::DeclaredButAccepted { issuer: OLD.into() }),
        "{events:?}"
    );
    assert!(events.contains(&Event::Retired {
        kind: RetiredKind::Issuer,
        name: OLD.into(),
        source: Source::Declared
    }));
    // The word outlives the configuration: gone from it, still retired.
    l.observe_round(&every(20, vec![still(NEW)]), &declared(1), WINDOW);
    assert_eq!(l.conclude(WINDOW).unwrap().retired_issuers, [OLD]);
    assert_eq!(
        l.retired_issuers,
        [OLD],
        "kept for replicas of the previous release"
    );
}

/// Installed mid-roll: two pairs at once are not numbered by guesswork.
#[test]
fn a_new_ledger_does_not_guess_the_order_of_two_pairs() {
    let split = || vec![server(NEW, "b", &["a", "b"]), server(OLD, "a", &["a", "b"])];
    let mut l = Ledger::default();
    let events = observe(&mut l, every(0, split()));
    assert!(
        events.contains(&Event::OrderUnknown { pairs: 2 }),
        "{events:?}"
    );
    assert!(
        l.conclude(WINDOW).is_none(),
        "the static generation is stamped meanwhile"
    );
    assert!(observe(&mut l, every(10, split())).is_empty(), "said once");
    // Once one pair is on every server, it is the newer.
    observe(
        &mut l,
        every(
            20,
            vec![server(NEW, "b", &["a", "b"]), server(NEW, "b", &["a", "b"])],
        ),
    );
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.number, d.generation.issuer.as_str()),
        (2, NEW)
    );
    assert_eq!(l.generations[0].issuer, OLD);
    assert!(l.unordered.is_empty());

    // A declaration orders them at once.
    let mut l = Ledger::default();
    let plan = Declared {
        next_issuer: Some(NEW.to_owned()),
        ..declared(1)
    };
    l.observe_round(&every(0, split()), &plan, WINDOW);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.issuer.as_str(), d.next_issuer.as_deref()),
        (OLD, Some(NEW))
    );
}

#[test]
fn last_seen_moves_only_once_it_is_stale() {
    let mut l = Ledger::default();
    observe(&mut l, every(0, vec![server(OLD, "a", &["a"])]));
    let refresh = WINDOW.refresh().as_secs() as i64;
    let (changed, _) = l.observe_round(
        &every(refresh - 1, vec![server(OLD, "a", &["a"])]),
        &declared(1),
        WINDOW,
    );
    assert!(!changed);
    let (changed, _) = l.observe_round(
        &every(refresh, vec![server(OLD, "a", &["a"])]),
        &declared(1),
        WINDOW,
    );
    assert!(changed);
    assert_eq!(l.generations[0].last_seen, at(refresh));
    assert_eq!(l.keys[0].last_seen, at(refresh));
}

#[test]
fn history_is_bounded() {
    let mut l = Ledger::default();
    for i in 0..(MAX_GENERATIONS as i64 + 10) {
        let kid = format!("k{i}");
        observe(&mut l, every(i * 10, vec![server(OLD, &kid, &[&kid])]));
    }
    assert_eq!(l.generations.len(), MAX_GENERATIONS);
    assert!(l.keys.len() <= MAX_KEYS);
    assert_eq!(number(&l), Some(MAX_GENERATIONS as u64 + 10));
    assert!(l.check(None).is_ok(), "{:?}", l.check(None));
}

fn two_switches() -> Ledger {
    let mut l = Ledger::default();
    observe(&mut l, every(0, vec![server(OLD, "a", &["a", "b"])]));
    observe(&mut l, every(100, vec![server(NEW, "b", &["a", "b"])]));
    l
}

/// Fields a later release adds are kept on every rewrite; a schema-1
/// ledger reads as completed switches and declared retirements.
#[test]
fn the_ledger_reads_back_what_it_wrote_and_keeps_what_it_does_not_know() {
    let l = two_switches();
    let text = serde_json::to_string(&l).unwrap();
    assert_eq!(from_json(&text).unwrap(), l);
    let mut value: Value = serde_json::from_str(&text).unwrap();
    value["later"] = serde_json::json!({"x": 1});
    value["generations"][0]["note"] = serde_json::json!("kept");
    let mut read = from_json(&value.to_string()).unwrap();
    observe(&mut read, every(500, vec![server(NEW, "b", &["b"])]));
    let written: Value = serde_json::to_value(&read).unwrap();
    assert_eq!(written["later"], serde_json::json!({"x": 1}));
    assert_eq!(written["generations"][0]["note"], "kept");
    assert_eq!(written["schema"], SCHEMA);

    let v1 = serde_json::json!({
        "generations": [
            {"number": 1, "issuer": OLD, "keyId": "a", "firstSeen": "2027-01-15T08:00:00Z", "lastSeen": "2027-01-15T08:05:00Z"},
            {"number": 2, "issuer": NEW, "keyId": "a", "firstSeen": "2027-01-15T09:00:00Z", "lastSeen": "2027-01-15T09:05:00Z"}],
        "keys": [], "retiredIssuers": [OLD]});
    let read = from_json(&v1.to_string()).unwrap();
    let d = read.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.number, d.retired_issuers.as_slice()),
        (2, &[OLD.to_owned()][..])
    );
    assert_eq!(read.retirements[0].source, Source::Declared);
}

#[test]
fn a_ledger_that_cannot_be_believed_is_refused_with_the_reason() {
    let good = two_switches();
    let refused = |l: &Ledger, now: Option<Timestamp>, why: &str| {
        let e = l.check(now).unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
    };
    let mut gap = good.clone();
    gap.generations[1].number = 999;
    refused(&gap, None, "rise by one");
    let mut future = good.clone();
    future.generations[1].last_seen = "2099-01-01T00:00:00Z".parse().unwrap();
    assert!(
        future.check(None).is_ok(),
        "without a clock only the order is checked"
    );
    refused(&future, Some(at(200)), "ahead of the API server's clock");
    let mut extra = good.clone();
    extra.retirements.push(Retirement {
        kind: RetiredKind::Issuer,
        name: "https://never-signed.example".into(),
        at: at(150),
        source: Source::Declared,
        unknown: Map::new(),
    });
    refused(&extra, None, "no generation of the ledger signed");
    let mut signing = good.clone();
    signing.retirements.push(Retirement {
        kind: RetiredKind::Issuer,
        name: NEW.into(),
        at: at(150),
        source: Source::Observed,
        unknown: Map::new(),
    });
    refused(&signing, None, "signs the generation in force");
    let mut backwards = good.clone();
    backwards.generations[1].completed = Some(at(50));
    refused(&backwards, None, "completed before");
}

#[test]
fn a_ledger_is_ahead_behind_or_another_history() {
    let older = two_switches();
    let mut newer = older.clone();
    observe(&mut newer, every(400, vec![server(OLD, "c", &["b", "c"])]));
    assert_eq!(newer.relation(&older), Relation::Ahead);
    assert_eq!(
        older.relation(&newer),
        Relation::Behind,
        "a late watch event"
    );
    assert_eq!(older.relation(&older.clone()), Relation::Same);
    // Number 999 alone, as a user might write it: another history.
    let mut forged = Ledger::default();
    observe(&mut forged, every(0, vec![server(OLD, "z", &["z"])]));
    forged.generations[0].number = 999;
    assert!(forged.check(None).is_ok(), "valid on its own");
    assert!(matches!(forged.relation(&older), Relation::Diverged(_)));
    // Number 2 given to another pair.
    let mut rewritten = older.clone();
    rewritten.generations[1].key_id = "z".into();
    assert!(matches!(rewritten.relation(&older), Relation::Diverged(_)));
}

/// A server of the list that did not answer: its absence proves nothing,
/// so nothing completes and nothing retires.
#[test]
fn a_round_missing_a_server_concludes_nothing_about_all_of_them() {
    let mut l = Ledger::default();
    observe(
        &mut l,
        every(
            0,
            vec![server(OLD, "a", &["a", "b"]), server(OLD, "a", &["a", "b"])],
        ),
    );
    observe(
        &mut l,
        every(
            10,
            vec![server(OLD, "b", &["a", "b"]), server(OLD, "a", &["a", "b"])],
        ),
    );
    let partial = |seconds| Round {
        at: at(seconds),
        servers: vec![server(OLD, "b", &["b"])],
        coverage: Coverage::Partial,
        canaries: Vec::new(),
    };
    for t in [20, 400, 800] {
        observe(&mut l, partial(t));
    }
    assert_eq!(
        number(&l),
        Some(1),
        "the silent server may still sign with a"
    );
    assert!(l.retirements.is_empty());
    observe(
        &mut l,
        every(
            900,
            vec![server(OLD, "b", &["b"]), server(OLD, "b", &["b"])],
        ),
    );
    assert_eq!(number(&l), Some(2));
}

/// Where the API audiences are not the issuers, the canary of the old
/// generation says: refused by every server while its key is still listed,
/// the issuer is retired, observed; accepted, a declaration is contradicted.
#[test]
fn a_refused_canary_retires_its_issuer_and_an_accepted_one_contradicts_the_word() {
    let canary = |issuer: &str, verdict| CanaryReview {
        issuer: issuer.to_owned(),
        key_id: "a".to_owned(),
        verdict,
    };
    let mut l = Ledger::default();
    observe(&mut l, every(0, vec![server(OLD, "a", &["a"])]));
    observe(&mut l, every(10, vec![server(NEW, "a", &["a"])]));
    let word = Declared {
        retired_issuers: vec![OLD.to_owned()],
        ..declared(1)
    };
    let mut round = every(20, vec![server(NEW, "a", &["a"])]);
    round.canaries = vec![canary(OLD, CanaryVerdict::Accepted)];
    let mut declared_only = l.clone();
    let (_, events) = declared_only.observe_round(&round, &word, WINDOW);
    assert!(
        events.contains(&Event::DeclaredButAccepted { issuer: OLD.into() }),
        "{events:?}"
    );
    // Accepted and not declared: still retiring.
    observe(&mut l, round);
    assert_eq!(l.conclude(WINDOW).unwrap().retiring_issuers, [OLD]);
    let mut round = every(30, vec![server(NEW, "a", &["a"])]);
    round.canaries = vec![canary(OLD, CanaryVerdict::Refused)];
    let events = observe(&mut l, round);
    assert_observed_retired(&events, OLD);
    assert_eq!(l.retirements[0].at, at(30));
}
