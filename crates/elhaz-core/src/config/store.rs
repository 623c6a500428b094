//! The on-disk store of session configs: atomic writes under `configs/.lock`, listing that
//! shows invalid files without hiding the others, removal.

use super::*;

/// The directory of session configs.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// One entry of [`Store::list`].
#[derive(Debug)]
pub struct Listed {
    /// Session name.
    pub name: String,
    /// The config, or why it could not be loaded.
    pub config: Result<SessionConfig, Error>,
}

impl Store {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `name`'s file.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// Reads a config's raw text.
    pub fn read(&self, name: &str) -> Result<String, Error> {
        validate_name(name)?;
        let file = self.file(name);
        read_config_file(&file)?.ok_or_else(|| Error::ConfigNotFound {
            name: name.to_string(),
            file,
        })
    }

    /// Loads and validates a config.
    pub fn load(&self, name: &str, custom_endpoint: bool) -> Result<SessionConfig, Error> {
        let src = self.read(name)?;
        let file = self.file(name);
        let cfg = SessionConfig::parse(&src, &file, custom_endpoint)?;
        if cfg.session.as_ref().is_some_and(|s| s.0 == name) {
            return Err(located_error(
                &file,
                &src,
                &FieldError {
                    field: "session",
                    message: "a session cannot chain from itself".into(),
                },
            ));
        }
        Ok(cfg)
    }

    /// Names of every config, sorted.
    pub fn names(&self) -> Result<Vec<String>, Error> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot list {}", self.dir.display()), e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".toml")?;
                validate_name(stem).ok()?;
                Some(stem.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every config with its load result.
    pub fn list(&self, custom_endpoint: bool) -> Result<Vec<Listed>, Error> {
        Ok(self
            .names()?
            .into_iter()
            .map(|name| Listed {
                config: self.load(&name, custom_endpoint),
                name,
            })
            .collect())
    }

    /// Takes the store's write lock (blocking until it is free).
    fn lock(&self) -> Result<std::fs::File, Error> {
        // Writes go only into a directory nobody else can swap or plant files in.
        crate::fsafe::check_dir_chain(&self.dir)?;
        crate::fsafe::create_dir_mode(&self.dir, 0o700)?;
        let path = self.dir.join(".lock");
        let f = open_private(&path)?;
        f.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(f)
    }

    /// Atomically writes `text` (already validated) as `name`'s config. Without `force`, an
    /// existing config is an error.
    pub fn write(&self, name: &str, text: &str, force: bool) -> Result<PathBuf, Error> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let file = self.file(name);
        if !force && std::fs::symlink_metadata(&file).is_ok() {
            return Err(Error::ConfigExists {
                name: name.into(),
                file,
            });
        }
        atomic_write(&file, text.as_bytes())?;
        Ok(file)
    }

    /// Removes `name`'s config.
    pub fn remove(&self, name: &str) -> Result<PathBuf, Error> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let file = self.file(name);
        match std::fs::remove_file(&file) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ConfigNotFound {
                name: name.into(),
                file,
            }),
            Err(e) => Err(Error::io(format!("cannot remove {}", file.display()), e)),
        }
    }
}
