//! issuer-guard: an admission webhook that keeps workloads alive through
//! service-account issuer changes and signing-key rotations.

pub mod admission;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod object;
pub mod policy;
pub mod reload;
pub mod rules;
pub mod server;
pub mod state;
pub mod yaml;
