//! elhaz-daemon — the long-lived half of elhaz.
//!
//! A bounded LRU of named sessions; for each, temporary credentials from STS (or IAM Identity
//! Center), refreshed in the background well before they expire and served from memory over a
//! private unix socket. Everything that needs tokio or the AWS SDK lives here, never in
//! `elhaz-core`, which the CLI's hot path runs through.
//!
//! The modules of `elhaz-core` are re-exported at this crate's root (`crate::config`,
//! `crate::protocol`, …), so daemon code names them as if they were its own; [`codec`] adds the
//! async framing to core's blocking one.
//!
//! # Layout
//!
//! - [`daemon`] — server (accept, peer check, limits), one handler per request, lifecycle
//!   (lock, stale socket, socket mode, detach, signals), the credential engine
//!   (`daemon::sessions`: bounded LRU, single-flight fetches, background refresh-ahead) and the
//!   in-process broker (`daemon::broker`, `ELHAZ_NO_DAEMON=1`).
//! - [`sts`] — the `Fetch` trait and its AWS STS implementation: sources, AssumeRole,
//!   GetSessionToken, web identity, MFA sessions, error classification.
//! - [`sso`] — IAM Identity Center: OIDC tokens, the AWS CLI's token cache, role credentials.
//! - [`keyring`] — long-term keys in the OS keyring.
//! - [`logging`] — the daemon's rotated log files and the audit trail.
//! - [`codec`] — core's blocking framing plus the daemon's async codec (same layout and cap).

pub mod codec;
pub mod daemon;
pub mod keyring;
pub mod logging;
pub mod sso;
pub mod sts;

pub use elhaz_core::{
    Error, client, config, credentials, ecs, error, fsafe, import, paths, protocol, selfref,
};
