//! elhaz-core — what the CLI's hot path runs through.
//!
//! `elhaz credential-process` runs on every SDK credential refresh, so its start-up cost is paid
//! many times. This crate holds everything that path needs and nothing else: it depends on no
//! async runtime, no HTTP stack and no AWS crate, and `tests/it/layout.rs` checks that over
//! `cargo metadata`, so the boundary is kept by the compiler rather than by convention. The
//! daemon (`elhaz-daemon`) builds on it; the `elhaz` package re-exports both. The `elhaz`
//! binary users run is [`front`], linked against this crate alone.
//!
//! # Layout
//!
//! - [`paths`] — every filesystem location, and `ELHAZ_HOME` / `ELHAZ_SOCKET`.
//! - [`fsafe`] — filesystem safety: ssh-style owner/mode checks of every directory and config
//!   file, `O_NOFOLLOW` opens, private dirs and atomic writes.
//! - [`protocol`] — wire types shared by CLI and daemon, `PROTOCOL_VERSION`, error codes.
//! - [`codec`] — length-delimited JSON framing with a hard size cap (blocking; the daemon's
//!   async codec in `elhaz-daemon` has the same layout and cap).
//! - [`config`] — session config and `elhaz.toml` schema, validation, the atomic store.
//! - [`client`] — connect, call, autostart; blocking `std` only (the hot path).
//! - [`front`] — the lean `elhaz` binary: serves `credential-process` and `exec` when a running
//!   daemon answers with credentials, hands everything else to `elhaz-full`.
//! - [`consume`] — what the consumers hand out, once for both binaries: the
//!   `credential_process` JSON, a session's variables, the slow-request notice.
//! - [`selfref`] — what elhaz puts into an environment, so a daemon scrubs it from its own and
//!   refuses a profile that would call elhaz back.
//! - [`credentials`] — secret types (redacting, zeroizing) and RFC 3339 formatting.
//! - [`ecs`] — the ECS container credentials endpoint (`exec --ecs`, `serve ecs`); std only.
//! - [`import`] — converting Python elhaz YAML configs (`config import-elhaz`).
//! - [`error`] — the library's `thiserror` type and its mapping to wire error codes.

pub mod client;
pub mod codec;
pub mod config;
pub mod consume;
pub mod credentials;
pub mod ecs;
pub mod error;
pub mod front;
pub mod fsafe;
pub mod import;
pub mod paths;
pub mod protocol;
pub mod selfref;

pub use error::Error;
