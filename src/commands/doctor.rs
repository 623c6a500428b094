//! `elhaz doctor` (being written).

use std::process::ExitCode;

use anyhow::Result;
use elhaz::paths::Paths;

pub fn run(_paths: &Paths, _json: bool) -> Result<ExitCode> {
    anyhow::bail!("elhaz doctor is not implemented yet")
}
