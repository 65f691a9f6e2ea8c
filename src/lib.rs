//! issuer-guard: an admission webhook that keeps workloads alive through
//! service-account issuer changes and signing-key rotations.
//!
//! The binary (`src/main.rs`) wires [`cli`] to [`server`] and [`check`].
//! What else is public is what the examples, benches and integration tests
//! drive: the review API in [`admission`] and what it is built from. The
//! rest is crate-private; `docs/architecture.md` says where each part lives.

pub mod admission;
pub mod check;
pub mod cli;
pub mod config;
pub mod judge;
pub mod logging;
pub mod object;
pub mod rules;
pub mod server;

mod cluster;
mod discovery;
mod live;
mod metrics;
mod policy;
mod reload;
mod state;
mod yaml;
