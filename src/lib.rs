//! issuer-guard: an admission webhook that keeps workloads alive through
//! service-account issuer changes and signing-key rotations.
//!
//! # Public surface
//!
//! The binary (`src/main.rs`) wires [`cli`] to [`server`] and [`check`].
//! What else is public is what the examples, benches, fuzz targets and
//! integration tests drive, and nothing more (`unreachable_pub` is denied
//! in CI, so an item is `pub` only when something outside the crate can
//! reach it):
//!
//! - [`admission`]: [`admission::Webhook`] answers one AdmissionReview body
//!   (`review`), with the `matchConditions` the registration must carry.
//! - [`judge`]: judging one object (a file's or a live one) against the
//!   configuration in force; `check`, the webhook and the planned cluster
//!   verdict share it.
//! - [`rules`]: the rules, their ids and the facts they are given.
//! - [`config`]: the configuration file's grammar and validation, and with
//!   `test-support` the table of its fields the chart's schema is tested
//!   against.
//! - [`object`]: the borrowed reader of a Kubernetes object.
//! - [`check`]: the offline `check` command; [`status`]: the cluster's
//!   verdict on retiring an issuer or key; [`inventory`]: the same verdict
//!   kept by watches in the cluster and exported as metrics; [`restart`]:
//!   recreating what blocks it.
//! - [`cli`], [`logging`] and [`server`]: the command line, the log set-up
//!   and the `serve` runtime (`server::run_with_routes` lets the benchmark's
//!   null webhook swap the review handlers).
//!
//! The rest is crate-private: the API room (`cluster`), discovery, the
//! runtime's state (`live`), the ledger and generations (`state`),
//! enforcement (`policy`), metrics, file reloads and YAML.
//! `docs/architecture.md` says where each part lives.

#![warn(unreachable_pub)]

pub mod admission;
pub mod check;
pub mod cli;
pub mod config;
pub mod inventory;
pub mod judge;
pub mod logging;
pub mod object;
pub mod restart;
pub mod rules;
pub mod server;
pub mod status;

mod cluster;
mod discovery;
mod live;
mod metrics;
mod policy;
mod reload;
mod retirement;
mod state;
mod yaml;
