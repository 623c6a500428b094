//! elhaz — a credential-refreshing session authority for AWS.
//!
//! A long-lived daemon holds a bounded LRU of named sessions. For each it obtains temporary
//! credentials from STS, refreshes them in the background well before they expire, and serves
//! them from memory over a private unix socket. A thin CLI (`elhaz exec`, `elhaz
//! credential-process`, …) talks to it with one blocking round trip.
//!
//! # Layout
//!
//! A workspace of three packages; the boundary that matters is a crate boundary, so the
//! compiler keeps it (docs/architecture.md, "Crates"):
//!
//! - `elhaz-core` (`crates/elhaz-core`) — what the CLI's hot path runs through: protocol,
//!   blocking codec and client, paths, filesystem safety, config schema and store. No tokio,
//!   no hyper, no AWS crate (checked over `cargo metadata` by `tests/it/layout.rs`).
//! - `elhaz-daemon` (`crates/elhaz-daemon`) — the engine, STS, IAM Identity Center, the
//!   server and its lifecycle, logging, the keyring, the in-process broker.
//! - this package — two binaries, installed together: the lean `elhaz` (`src/front.rs`, on
//!   `elhaz-core` alone: credential-process and exec from a running daemon) and `elhaz-full`
//!   (`src/main.rs`, `commands/`: one function per subcommand, the only place that uses
//!   `anyhow` and prints), which `elhaz` hands everything else to — and this library:
//!
//! - [`cli`] — the command-line types (clap derive) and the hot path's argument fast path; in
//!   the library so that tests parse documented commands with the real `Cli`.
//!
//! The modules of both crates are re-exported here under one path (`elhaz::protocol`,
//! `elhaz::daemon`, …) for the commands and the integration tests.

// clap turns doc comments into `--help` text, so an item without one (a flattened field, a
// subcommand enum) stays undocumented on purpose rather than changing the help.
#[allow(missing_docs)]
pub mod cli;

pub use elhaz_core::{
    Error, client, config, consume, credentials, ecs, error, front, fsafe, import, paths, protocol,
    selfref,
};
pub use elhaz_daemon::{codec, daemon, keyring, logging, sso, sts};
