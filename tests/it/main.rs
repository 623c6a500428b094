//! The integration test suite: one binary, one module per area. Every test runs the real
//! `elhaz` binary in its own temp `ELHAZ_HOME` (see `util`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

mod bench_smoke;
mod clocks;
mod config_store;
mod console;
mod consumers;
mod daemon_stop;
mod daily;
mod delegates;
mod doc_examples;
mod docs;
mod ecs;
mod engine;
mod fake_sso;
mod fake_sts;
mod forgiving;
mod frames;
mod front;
mod hardening;
mod hardening_faults;
mod hardening_input;
mod hardening_isolation;
mod hardening_load;
mod in_process;
mod layout;
mod lifecycle;
mod moto;
mod ops;
mod paths;
mod protocol_fixtures;
mod rotate;
mod scale;
mod security;
mod shared;
mod sso;
mod trust;
mod trust_shared;
