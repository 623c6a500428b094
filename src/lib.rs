//! elhaz — a credential-refreshing session authority for AWS.
//!
//! A long-lived daemon holds a bounded LRU of named sessions. For each it obtains temporary
//! credentials from STS, refreshes them in the background well before they expire, and serves
//! them from memory over a private unix socket. A thin CLI (`elhaz exec`, `elhaz
//! credential-process`, …) talks to it with one blocking round trip.
//!
//! # Layout
//!
//! Library (this crate):
//!
//! - [`cli`] — the command-line types (clap derive) and the hot path's argument fast path; in
//!   the library so that tests parse documented commands with the real `Cli`.
//! - [`paths`] — every filesystem location, and `ELHAZ_HOME` / `ELHAZ_SOCKET`.
//! - [`fsafe`] — filesystem safety: ssh-style owner/mode checks of every directory and config
//!   file, `O_NOFOLLOW` opens, private dirs and atomic writes.
//! - [`protocol`] — wire types shared by CLI and daemon, `PROTOCOL_VERSION`, error codes.
//! - [`codec`] — length-delimited JSON framing with a hard size cap (async and blocking).
//! - [`config`] — session config and `elhaz.toml` schema, validation, the atomic store.
//! - [`client`] — connect, call, autostart; blocking `std` only (the hot path).
//! - [`daemon`] — server (accept, peer check, limits), one handler per request, lifecycle
//!   (lock, stale socket, socket mode, detach, signals), and the credential engine
//!   (`daemon::sessions`: bounded LRU, single-flight fetches, background refresh-ahead).
//! - [`sts`] — the `Fetch` trait and its AWS STS implementation: sources, AssumeRole,
//!   GetSessionToken, web identity, MFA sessions, error classification.
//! - [`sso`] — IAM Identity Center: OIDC tokens, the AWS CLI's token cache, role credentials.
//! - [`credentials`] — secret types (redacting, zeroizing) and RFC 3339 formatting.
//! - [`keyring`] — long-term keys in the OS keyring.
//! - [`ecs`] — the ECS container credentials endpoint (`exec --ecs`, `serve ecs`); std only.
//! - [`import`] — converting Python elhaz YAML configs (`config import-elhaz`).
//! - [`logging`] — the daemon's rotated log files.
//! - [`error`] — the library's `thiserror` type and its mapping to wire error codes.
//!
//! Binary (`src/main.rs`): `commands/` has one function per
//! subcommand and is the only place that uses `anyhow` and prints.

// clap turns doc comments into `--help` text, so an item without one (a flattened field, a
// subcommand enum) stays undocumented on purpose rather than changing the help.
#[allow(missing_docs)]
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod ecs;
pub mod error;
pub mod fsafe;
pub mod import;
pub mod keyring;
pub mod logging;
pub mod paths;
pub mod protocol;
pub mod sso;
pub mod sts;

pub use error::Error;
