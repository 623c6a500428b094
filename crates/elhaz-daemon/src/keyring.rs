//! Long-term access keys in the OS keyring (service `elhaz`, one entry per name).
//!
//! We use `keyring-core` with one store per platform: the kernel keyutils store on Linux
//! (works headless; keys live in the per-user persistent keyring until reboot or 3 days
//! unused) and the login keychain on macOS. A process without a session keyring of its own —
//! a daemon, a service, a container — cannot link keys into the persistent keyring, so
//! [`init`] joins a fresh anonymous session keyring first. Keyrings are per thread, so `init`
//! runs before any runtime thread exists.
//!
//! The keys are stored as a small JSON object and read once per session load; the daemon
//! keeps them in zeroizing memory and never reads the keyring per refresh.

use std::sync::OnceLock;

use keyring_core::Entry;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::credentials::LongTermKeys;

/// Keyring service name of every elhaz entry.
pub const SERVICE: &str = "elhaz";

/// Keyring failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No entry of that name.
    #[error("no keyring entry {0:?}: store keys with `elhaz keyring set {0}`")]
    NotFound(String),
    /// The store cannot be reached.
    #[error("the OS keyring is not available: {0}")]
    Unavailable(String),
    /// The entry holds something that is not our JSON.
    #[error(
        "keyring entry {0:?} does not hold elhaz keys (re-create it with `elhaz keyring set {0}`)"
    )]
    BadFormat(String),
    /// Another store error.
    #[error("keyring entry {entry:?}: {message}")]
    Other {
        /// Entry name.
        entry: String,
        /// What failed.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: String,
}

impl Drop for Stored {
    fn drop(&mut self) {
        self.secret_access_key.zeroize();
    }
}

static INIT: OnceLock<Result<(), String>> = OnceLock::new();

/// Selects the platform store (once per process). On Linux, joins a fresh session keyring
/// first; call before spawning threads that will use the keyring.
pub fn init() -> Result<(), KeyringError> {
    INIT.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            join_session_keyring();
            let store = linux_keyutils_keyring_store::Store::new().map_err(|e| e.to_string())?;
            keyring_core::set_default_store(store);
        }
        #[cfg(target_os = "macos")]
        {
            let store =
                apple_native_keyring_store::keychain::Store::new().map_err(|e| e.to_string())?;
            keyring_core::set_default_store(store);
        }
        Ok(())
    })
    .clone()
    .map_err(KeyringError::Unavailable)
}

#[cfg(target_os = "linux")]
fn join_session_keyring() {
    const KEYCTL_JOIN_SESSION_KEYRING: nix::libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) takes no pointer to our memory (NULL asks the
    // kernel for a new anonymous keyring) and only changes this thread's keyring credentials.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<nix::libc::c_char>(),
        )
    };
    if r < 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot join a session keyring");
    }
}

fn entry(name: &str) -> Result<Entry, KeyringError> {
    init()?;
    Entry::new(SERVICE, name).map_err(|e| map_err(name, e))
}

fn map_err(name: &str, e: keyring_core::Error) -> KeyringError {
    match e {
        keyring_core::Error::NoEntry => KeyringError::NotFound(name.into()),
        keyring_core::Error::NoStorageAccess(p) => KeyringError::Unavailable(p.to_string()),
        keyring_core::Error::NoDefaultStore => {
            KeyringError::Unavailable("no keyring store on this platform".into())
        }
        keyring_core::Error::BadEncoding(_) | keyring_core::Error::BadDataFormat(..) => {
            KeyringError::BadFormat(name.into())
        }
        other => KeyringError::Other {
            entry: name.into(),
            message: other.to_string(),
        },
    }
}

/// Reads keys from an entry (of any store).
pub fn read_entry(name: &str, e: &Entry) -> Result<LongTermKeys, KeyringError> {
    let mut text = e.get_password().map_err(|e| map_err(name, e))?;
    let parsed = serde_json::from_str::<Stored>(&text);
    text.zeroize();
    let stored = parsed.map_err(|_| KeyringError::BadFormat(name.into()))?;
    Ok(LongTermKeys {
        access_key_id: stored.access_key_id.clone(),
        secret_access_key: SecretString::from(stored.secret_access_key.clone()),
    })
}

/// Reads the keys stored under `name`.
pub fn read(name: &str) -> Result<LongTermKeys, KeyringError> {
    read_entry(name, &entry(name)?)
}

/// Stores keys under `name` (replacing any).
pub fn set(name: &str, keys: &LongTermKeys) -> Result<(), KeyringError> {
    let stored = Stored {
        access_key_id: keys.access_key_id.clone(),
        secret_access_key: keys.secret_access_key.expose_secret().to_string(),
    };
    let mut json = serde_json::to_string(&stored).map_err(|e| KeyringError::Other {
        entry: name.into(),
        message: e.to_string(),
    })?;
    let r = entry(name)?
        .set_password(&json)
        .map_err(|e| map_err(name, e));
    json.zeroize();
    r
}

/// Deletes `name`.
pub fn remove(name: &str) -> Result<(), KeyringError> {
    entry(name)?
        .delete_credential()
        .map_err(|e| map_err(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyring_core::api::CredentialStoreApi;

    #[test]
    fn mock_store_round_trip_and_error_paths() {
        let store = keyring_core::mock::Store::new().unwrap();
        let e = store.build(SERVICE, "t1", None).unwrap();
        assert!(matches!(
            read_entry("t1", &e),
            Err(KeyringError::NotFound(_))
        ));
        e.set_password(r#"{"AccessKeyId":"AKIAX","SecretAccessKey":"s3"}"#)
            .unwrap();
        let k = read_entry("t1", &e).unwrap();
        assert_eq!(k.access_key_id, "AKIAX");
        assert_eq!(k.secret_access_key.expose_secret(), "s3");

        e.set_password("not json").unwrap();
        assert!(matches!(
            read_entry("t1", &e),
            Err(KeyringError::BadFormat(_))
        ));

        let m: &keyring_core::mock::Cred = e.as_any().downcast_ref().unwrap();
        m.set_error(keyring_core::Error::NoStorageAccess("locked".into()));
        let err = read_entry("t1", &e).unwrap_err();
        assert!(matches!(err, KeyringError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("locked"));
    }
}
