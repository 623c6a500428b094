//! Session configs and global settings: schema, validation and the atomic on-disk store.
//!
//! One TOML file per named session (`configs/NAME.toml`) plus one global `elhaz.toml`. Configs
//! hold no secrets — static keys are not even a field (unknown fields are rejected); long-term
//! keys live in the OS keyring and are referenced by entry name.
//!
//! Validation happens in two layers. Field-local rules (ARN shapes, name charsets, durations
//! that parse) run during deserialization. Rules that depend on several fields or on the
//! environment (duration limits, which only apply against real AWS STS; one source at most)
//! run afterwards and are located by walking the spanned document, so every error still names
//! file, line, column and field.
//!
//! Errors never quote a value: a secret pasted into the wrong field must not reach a terminal,
//! a log or (in shared mode) another uid's client. That is why deserialization does not go
//! through `toml::from_str` — serde's type errors embed the value (`invalid type: string
//! "…"`) and toml quotes the offending line — but through a small deserializer over toml's
//! spanned document (`redacting`) whose error type overrides serde's `invalid_type`,
//! `invalid_value` and `unknown_field` hooks (structured data, no message parsing) to report
//! the kind of value found, the field path and the position. The same deserializer reports
//! every problem in a file rather than the first: after an error it leaves the offending key
//! out and deserializes again (at most twice `MAX_PROBLEMS` attempts over a file of at most
//! 64 KiB: cheap, and bounded for hostile input). Cross-field rules are also collected, but run
//! only once every field parsed (a rule about a field that failed would mislead). A TOML
//! syntax error ends parsing and is reported alone.
//!
//! Writes are atomic: a temp file in the same directory (created 0600), `fsync`, `rename`,
//! `fsync` of the directory — all under an exclusive `flock` on `configs/.lock`, so concurrent
//! `config add` runs lose nothing and a crash leaves either the old file or the new one.
//!
//! One file per concern: [`names`] (names and small checked types), [`session`] (the session
//! schema and its cross-field rules), [`settings`] (`elhaz.toml`), [`span`] (locating problems),
//! `redacting` (the value-free deserializer) and [`store`] (the on-disk store). Everything is
//! re-exported here, so callers name `config::X`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

use crate::fsafe::sync_dir;
pub use crate::fsafe::{MAX_CONFIG_BYTES, atomic_write, open_private, read_config_file};

mod names;
mod redacting;
mod session;
mod settings;
mod span;
mod store;
#[cfg(test)]
mod tests;

pub use names::*;
pub use session::*;
pub use settings::*;
use span::*;
pub use store::*;
