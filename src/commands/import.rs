//! `elhaz config import-elhaz` (being written).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use elhaz::paths::Paths;

pub fn import_elhaz(
    _paths: &Paths,
    _path: Option<&Path>,
    _force: bool,
    _dry_run: bool,
) -> Result<ExitCode> {
    anyhow::bail!("elhaz config import-elhaz is not implemented yet")
}
