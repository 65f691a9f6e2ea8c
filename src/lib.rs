//! issuer-guard: an admission webhook that keeps workloads alive through
//! service-account issuer changes and signing-key rotations.

pub mod admission;
pub mod config;
pub mod metrics;
pub mod object;
pub mod policy;
pub mod rules;
