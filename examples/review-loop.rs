//! Answers one fixture review N times in process, for instruction counts
//! under `valgrind --tool=callgrind` that a busy machine cannot disturb:
//! `cargo build --release --example review-loop` then
//! `valgrind --tool=callgrind target/release/examples/review-loop pod-small mutate 1000`.

use std::{process::ExitCode, sync::Arc};

use arc_swap::ArcSwap;
use issuer_guard::{
    admission::{Endpoint, Reply, Webhook},
    config::Config,
    rules::LegacySecrets,
};

const CONFIG: &str = "generation: {static: {number: 2, issuer: 'https://kubernetes.default.svc.cluster.local', keyId: kid-b}}\nrotation: {retiringKeyIds: [kid-a], graceSeconds: 3600}\n";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(fixture), Some(endpoint), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: review-loop FIXTURE mutate|validate COUNT");
        return ExitCode::from(2);
    };
    let path = format!(
        "{}/tests/fixtures/reviews/{fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let (Ok(body), Ok(n)) = (std::fs::read(&path), n.parse::<usize>()) else {
        eprintln!("cannot read {path} or count {n}");
        return ExitCode::from(2);
    };
    let endpoint = if endpoint == "mutate" {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    let Ok(config) = Config::parse(CONFIG) else {
        return ExitCode::from(2);
    };
    let webhook = Webhook::new(
        Arc::new(ArcSwap::from_pointee(config)),
        Arc::new(LegacySecrets::default()),
    );
    let mut bytes = 0;
    for _ in 0..n {
        bytes += match webhook.review(endpoint, std::hint::black_box(&body)).reply {
            Reply::Review(json) => json.len(),
            Reply::Unusable(why) => why.len(),
        };
    }
    println!("{n} reviews, {bytes} response bytes");
    ExitCode::SUCCESS
}
