//! The daemon: one process per user (or per `ELHAZ_HOME`) that owns the session cache and
//! serves it over a private unix socket.
//!
//! - [`server`] accepts connections (peer check, connection cap, timeouts) and runs one task
//!   per connection; [`server::run`] takes a listener and a shutdown future so `main` and the
//!   tests drive the same code.
//! - [`handler`] has one function per request variant.
//! - [`sessions`] is the bounded LRU of live sessions and their refresh tasks.
//! - [`clock`] is the wall clock the engine reads and the clock-jump (sleep/resume) signal.
//! - [`lifecycle`] is everything around the server: single-instance lock, stale socket
//!   recovery, socket creation with its mode, pid file, detaching, signals, idle exit, cleanup.
//! - [`policy`] decides who may ask for what (owner, shared-mode allow rules) and applies
//!   the per-client connection cap and per-session rate limit.
//! - [`groups`] reads a peer's groups for the allow rules (`SO_PEERGROUPS`; elsewhere the
//!   group database, off the runtime and cached per (uid, gid)).
//! - [`state`] is the shared state handed to every task.
//! - [`tokens`] holds the delegates' token hashes (`--require-token --token-file`).
//! - [`scheduler`] shapes the daemon's own STS calls (re-warm, refresh-ahead): a rate per
//!   endpoint, earliest deadline first, slower on throttling.
//! - [`broker`] is the in-process broker (`ELHAZ_NO_DAEMON=1`): this state and these handlers
//!   inside the CLI's process.

pub mod broker;
pub mod clock;
pub mod groups;
pub mod handler;
pub mod lifecycle;
pub mod policy;
pub mod scheduler;
pub mod server;
pub mod sessions;
pub mod state;
pub mod tokens;

// Lives in elhaz-core (the CLI scrubs the same variables when it spawns a daemon); kept at its
// old path for the daemon's code.
pub use crate::selfref;
pub use server::run;
pub use state::State;
