//! `elhaz config import-elhaz [PATH] [--force] [--dry-run]`: Python elhaz YAML configs in,
//! elhaz TOML configs out (the conversion itself is `elhaz::import`).
//!
//! One line per file — `imported`, `would import` or `skipped` — followed by indented notes;
//! then a summary. The exit status is non-zero only when nothing could be imported and
//! something failed. Secret values found in a YAML file are never printed or written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use elhaz::config::{self, Settings, Store};
use elhaz::import::{ConvertError, import_text};
use elhaz::paths::Paths;

/// Largest YAML file we read (Python elhaz configs are a few hundred bytes).
const MAX_YAML_BYTES: u64 = 1024 * 1024;

/// `$HOME/.elhaz/configs`, where Python elhaz keeps its configs.
fn default_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf()))
        .ok_or_else(|| anyhow!("cannot find your home directory: pass the directory to import"))?;
    Ok(home.join(".elhaz").join("configs"))
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The files to import: every `*.yaml` / `*.yml` of a directory (sorted; `NAME.yaml` wins over
/// `NAME.yml`, as Python elhaz only ever read `.yaml`), or the one file given.
fn files_of(src: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(src).with_context(|| {
        format!(
            "cannot read {} (pass the directory of Python elhaz configs, or one .yaml file)",
            src.display()
        )
    })?;
    if !meta.is_dir() {
        return Ok(vec![src.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("cannot list {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p) && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_yaml(file: &Path) -> Result<String> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_YAML_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if bytes.len() as u64 > MAX_YAML_BYTES {
        bail!("larger than {MAX_YAML_BYTES} bytes; not a Python elhaz config");
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("not valid UTF-8"))
}

/// What happened to one file.
enum Outcome {
    Imported {
        name: String,
        dest: PathBuf,
    },
    WouldImport {
        name: String,
        dest: PathBuf,
        text: String,
        overwrite: bool,
    },
    Skipped(String),
}

/// `config import-elhaz`: every file of `path` (default `~/.elhaz/configs`), then a summary.
pub fn import_elhaz(
    paths: &Paths,
    path: Option<&Path>,
    force: bool,
    dry_run: bool,
) -> Result<ExitCode> {
    let src = match path {
        Some(p) => p.to_path_buf(),
        None => default_dir()?,
    };
    let files = files_of(&src)?;
    if files.is_empty() {
        println!("no *.yaml or *.yml files in {}", src.display());
        return Ok(ExitCode::SUCCESS);
    }
    let importer = Importer {
        store: Store::new(paths.configs_dir.clone()),
        env_custom: config::env_custom_endpoint(),
        window: Settings::load(&paths.settings_file)
            .map(|s| s.refresh_window())
            .unwrap_or(config::DEFAULT_REFRESH_WINDOW),
        force,
        dry_run,
    };
    let width = files
        .iter()
        .map(|f| {
            f.file_name()
                .map_or(0, |n| n.to_string_lossy().chars().count())
        })
        .max()
        .unwrap_or(0);
    let mut seen: Vec<String> = Vec::new();
    let (mut ok, mut failed) = (0usize, 0usize);
    for file in &files {
        let shown = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut notes = Vec::new();
        let outcome = importer.import_one(file, &mut seen, &mut notes);
        if matches!(outcome, Outcome::Skipped(_)) {
            failed += 1;
        } else {
            ok += 1;
        }
        print_outcome(&shown, width, &outcome, &notes);
    }
    let verb = if dry_run { "would import" } else { "imported" };
    println!(
        "{verb} {ok} of {} file{} from {}{}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        src.display(),
        if failed > 0 {
            format!(" ({failed} skipped)")
        } else {
            String::new()
        }
    );
    if dry_run {
        println!("dry run: nothing was written");
    } else if ok > 0 {
        println!("next: `elhaz config list`, then `elhaz whoami NAME` to try one");
    }
    Ok(if ok == 0 && failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What every file's import shares: the destination store and the flags.
struct Importer {
    store: Store,
    env_custom: bool,
    /// The refresh window, for the freshness warning.
    window: u64,
    force: bool,
    dry_run: bool,
}

impl Importer {
    /// Converts and writes (or, in a dry run, only checks) one file. `seen`: the session names
    /// earlier files gave; `notes` receives the conversion's notes.
    fn import_one(&self, file: &Path, seen: &mut Vec<String>, notes: &mut Vec<String>) -> Outcome {
        let source = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = config::validate_name(&stem) {
            return Outcome::Skipped(format!("{e}; rename the file and import it again"));
        }
        if seen.contains(&stem) {
            return Outcome::Skipped(format!(
                "another file of this directory already gives session {stem:?}"
            ));
        }
        seen.push(stem.clone());
        let yaml = match read_yaml(file) {
            Ok(y) => y,
            Err(e) => return Outcome::Skipped(format!("{e:#}")),
        };
        let dest = self.store.file(&stem);
        let (text, conv) = match import_text(&yaml, &stem, &source, &dest, self.env_custom) {
            Ok(r) => r,
            Err(e @ ConvertError::NoAssumeRole) => return Outcome::Skipped(e.to_string()),
            Err(ConvertError::Invalid(m)) => return Outcome::Skipped(m),
        };
        *notes = conv.notes.clone();
        if let Some(w) = conv.config.freshness_warning(self.window) {
            notes.push(w);
        }
        let exists = std::fs::symlink_metadata(&dest).is_ok();
        if self.dry_run {
            if exists && !self.force {
                return Outcome::Skipped(format!(
                    "session config {stem:?} already exists at {} (use --force to overwrite)",
                    dest.display()
                ));
            }
            return Outcome::WouldImport {
                name: stem,
                dest,
                text,
                overwrite: exists,
            };
        }
        match self.store.write(&stem, &text, self.force) {
            Ok(dest) => Outcome::Imported { name: stem, dest },
            Err(e) => Outcome::Skipped(e.to_string()),
        }
    }
}

/// One file's line (`shown` padded to `width`), then its notes and, in a dry run, the text.
fn print_outcome(shown: &str, width: usize, outcome: &Outcome, notes: &[String]) {
    match outcome {
        Outcome::Imported { name, dest } => {
            println!(
                "imported      {shown:<width$}  → {name} ({})",
                dest.display()
            );
        }
        Outcome::WouldImport {
            name,
            dest,
            overwrite,
            ..
        } => {
            println!(
                "would import  {shown:<width$}  → {name} ({}{})",
                dest.display(),
                if *overwrite { ", overwriting it" } else { "" }
            );
        }
        Outcome::Skipped(why) => {
            println!("skipped       {shown:<width$}  {why}");
        }
    }
    // Notes explain a conversion; a file that was not converted only needs its reason.
    if !matches!(outcome, Outcome::Skipped(_)) {
        for n in notes {
            println!("    note: {n}");
        }
    }
    if let Outcome::WouldImport { dest, text, .. } = outcome {
        println!("    --- {}", dest.display());
        for line in text.lines() {
            println!("    {line}");
        }
    }
}
