use super::*;

const OLD: &str = "https://old.example";
const NEW: &str = "https://new.example";
const WINDOW: Window = Window(Duration::from_secs(300));

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn seen(seconds: i64, issuer: &str, kid: &str, verifying: &[&str]) -> Observation {
    Observation {
        issuer: issuer.to_owned(),
        key_id: kid.to_owned(),
        verifying: verifying.iter().map(|k| k.to_string()).collect(),
        at: at(seconds),
    }
}

fn state_of(d: &Discovered, kid: &str) -> Option<KeyState> {
    d.keys.iter().find(|(k, _)| k == kid).map(|(_, s)| *s)
}

#[test]
fn a_new_pair_gets_the_next_number_and_an_old_one_none() {
    let mut l = Ledger::default();
    assert!(l.conclude(WINDOW).is_none());
    assert!(l.observe(&seen(0, OLD, "a", &["a"]), 4, &[], WINDOW));
    assert_eq!(l.conclude(WINDOW).unwrap().generation.number, 4);
    // Seen again soon after: nothing to write.
    assert!(!l.observe(&seen(10, OLD, "a", &["a"]), 4, &[], WINDOW));
    assert!(l.observe(&seen(20, OLD, "b", &["a", "b"]), 4, &[], WINDOW));
    assert_eq!(l.conclude(WINDOW).unwrap().generation.number, 5);
    // The old signer again, as during a roll: no new number, no flap back.
    l.observe(&seen(200, OLD, "a", &["a", "b"]), 4, &[], WINDOW);
    assert_eq!(l.generations.len(), 2);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.number, d.generation.key_id.as_str()),
        (5, "b")
    );
    // An old number is never given again, even to a pair seen anew.
    l.observe(&seen(400, NEW, "b", &["b"]), 4, &[], WINDOW);
    assert_eq!(l.conclude(WINDOW).unwrap().generation.number, 6);
}

#[test]
fn last_seen_moves_only_once_it_is_stale() {
    let mut l = Ledger::default();
    l.observe(&seen(0, OLD, "a", &["a"]), 1, &[], WINDOW);
    let refresh = WINDOW.refresh().as_secs() as i64;
    assert!(!l.observe(&seen(refresh - 1, OLD, "a", &["a"]), 1, &[], WINDOW));
    assert!(l.observe(&seen(refresh, OLD, "a", &["a"]), 1, &[], WINDOW));
    assert_eq!(l.generations[0].last_seen, at(refresh));
    assert_eq!(l.keys[0].last_seen, at(refresh));
}

#[test]
fn a_rollback_past_the_window_follows_the_signer() {
    let mut l = Ledger::default();
    l.observe(&seen(0, OLD, "a", &["a", "b"]), 1, &[], WINDOW);
    l.observe(&seen(10, OLD, "b", &["a", "b"]), 1, &[], WINDOW);
    // Only A signs from now on; B stops being seen.
    for t in (100..=700).step_by(60) {
        l.observe(&seen(t, OLD, "a", &["a", "b"]), 1, &[], WINDOW);
    }
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(
        (d.generation.number, d.generation.key_id.as_str()),
        (1, "a")
    );
}

#[test]
fn keys_go_staged_signing_retiring_retired() {
    let mut l = Ledger::default();
    l.observe(&seen(0, OLD, "a", &["a"]), 1, &[], WINDOW);
    l.observe(&seen(60, OLD, "a", &["a", "b"]), 1, &[], WINDOW);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(state_of(&d, "a"), Some(KeyState::Signing));
    assert_eq!(state_of(&d, "b"), Some(KeyState::Staged));
    l.observe(&seen(120, OLD, "b", &["a", "b"]), 1, &[], WINDOW);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(state_of(&d, "a"), Some(KeyState::Retiring));
    assert_eq!(state_of(&d, "b"), Some(KeyState::Signing));
    // A leaves the JWKS; only once it has been gone for the window is it
    // retired, so a roll that shows either JWKS does not flap it.
    l.observe(&seen(200, OLD, "b", &["b"]), 1, &[], WINDOW);
    assert_eq!(
        state_of(&l.conclude(WINDOW).unwrap(), "a"),
        Some(KeyState::Retiring)
    );
    l.observe(&seen(500, OLD, "b", &["b"]), 1, &[], WINDOW);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(state_of(&d, "a"), Some(KeyState::Retired));
    assert_eq!(d.key_ids(KeyState::Retiring).count(), 0);
}

#[test]
fn a_previous_issuer_retires_only_on_the_operators_word() {
    let mut l = Ledger::default();
    l.observe(&seen(0, OLD, "a", &["a"]), 1, &[], WINDOW);
    l.observe(&seen(10, NEW, "a", &["a"]), 1, &[], WINDOW);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(d.generation.issuer, NEW);
    assert_eq!(d.retiring_issuers, vec![OLD.to_owned()]);
    // Years later it is still retiring: no timer retires an issuer.
    l.observe(&seen(100_000_000, NEW, "a", &["a"]), 1, &[], WINDOW);
    assert_eq!(l.conclude(WINDOW).unwrap().retiring_issuers, vec![OLD]);
    // The word is kept in the ledger, so it outlives the configuration.
    let retired = vec![OLD.to_owned(), "https://never-signed.example".to_owned()];
    assert!(l.observe(&seen(100_000_001, NEW, "a", &["a"]), 1, &retired, WINDOW));
    assert_eq!(l.retired_issuers, vec![OLD.to_owned()]);
    let d = l.conclude(WINDOW).unwrap();
    assert!(d.retiring_issuers.is_empty());
    assert_eq!(d.retired_issuers, vec![OLD.to_owned()]);
    assert!(!l.observe(&seen(100_000_002, NEW, "a", &["a"]), 1, &[], WINDOW));
}

#[test]
fn history_is_bounded() {
    let mut l = Ledger::default();
    for i in 0..(MAX_GENERATIONS as i64 + 20) {
        let kid = format!("k{i}");
        l.observe(&seen(i * 1000, OLD, &kid, &[&kid]), 1, &[], WINDOW);
    }
    assert_eq!(l.generations.len(), MAX_GENERATIONS);
    assert_eq!(l.keys.len(), MAX_KEYS);
    let d = l.conclude(WINDOW).unwrap();
    assert_eq!(d.generation.number, MAX_GENERATIONS as u64 + 20);
}

#[test]
fn the_ledger_reads_back_what_it_wrote() {
    let mut l = Ledger::default();
    l.observe(&seen(0, OLD, "a", &["a", "b"]), 1, &[], WINDOW);
    let text = serde_json::to_string_pretty(&l).unwrap();
    assert!(
        text.contains("\"firstSeen\": \"2027-01-15T08:00:00Z\""),
        "{text}"
    );
    let back: Ledger = serde_json::from_str(&text).unwrap();
    assert_eq!(back, l);
}

#[test]
fn a_later_version_is_at_least_an_earlier_one_and_not_the_reverse() {
    let mut earlier = Ledger::default();
    earlier.observe(&seen(0, OLD, "a", &["a"]), 1, &[], WINDOW);
    let mut refreshed = earlier.clone();
    refreshed.observe(&seen(100, OLD, "a", &["a"]), 1, &[], WINDOW);
    let mut switched = refreshed.clone();
    switched.observe(&seen(110, OLD, "b", &["a", "b"]), 1, &[], WINDOW);
    for (later, before) in [
        (&refreshed, &earlier),
        (&switched, &refreshed),
        (&switched, &earlier),
    ] {
        assert!(later.is_at_least(before));
        assert!(!before.is_at_least(later));
    }
    assert!(switched.is_at_least(&switched.clone()));
    assert!(earlier.is_at_least(&Ledger::default()));
}
