//! The bounded LRU of live sessions. (Credential engine: see the engine issue.)

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio_util::sync::CancellationToken;

use crate::config::{SessionConfig, Store};
use crate::protocol::{ErrorCode, Identity, SessionInfo, WireCredentials, WireError};

/// One cached session.
#[derive(Debug)]
pub struct Session {
    name: String,
    config: SessionConfig,
}

/// The session cache.
#[derive(Debug)]
pub struct Sessions {
    /// Never held across an `.await`.
    cache: Mutex<LruCache<String, Arc<Session>>>,
    store: Store,
    shutdown: CancellationToken,
}

impl Sessions {
    /// A cache of `capacity` sessions loading configs from `store`.
    pub fn new(store: Store, capacity: usize) -> Sessions {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Sessions {
            cache: Mutex::new(LruCache::new(cap)),
            store,
            shutdown: CancellationToken::new(),
        }
    }

    /// The token cancelled at daemon shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<Session>>> {
        // A panic while holding this lock cannot leave the LRU inconsistent (its operations are
        // not interrupted midway by our code), so recovering the guard is safe.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of cached sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.lock().cap().get()
    }

    fn info(s: &Session) -> SessionInfo {
        SessionInfo {
            name: s.name.clone(),
            state: "loading".into(),
            source: s.config.source().kind().into(),
            expiration: None,
            next_refresh: None,
            last_error: None,
            hits: 0,
            sts_calls: 0,
            warning: None,
        }
    }

    /// Every cached session, most recently used first.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.lock().iter().map(|(_, s)| Self::info(s)).collect()
    }

    /// Loads a session.
    pub async fn add(&self, name: &str) -> Result<SessionInfo, WireError> {
        let config = self
            .store
            .load(name, crate::config::env_custom_endpoint())
            .map_err(|e| e.to_wire())?;
        let s = Arc::new(Session {
            name: name.to_string(),
            config,
        });
        let info = Self::info(&s);
        self.lock().put(name.to_string(), s);
        Ok(info)
    }

    /// Evicts a session.
    pub fn remove(&self, name: &str) -> bool {
        self.lock().pop(name).is_some()
    }

    /// Drops every session.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Credentials for a session.
    pub async fn credentials(
        &self,
        name: &str,
        _mfa_code: Option<String>,
    ) -> Result<WireCredentials, WireError> {
        self.add(name).await?;
        Err(WireError::new(
            ErrorCode::Internal,
            "credential engine not built yet",
        ))
    }

    /// Caller identity of a session.
    pub async fn whoami(&self, name: &str, _mfa: Option<String>) -> Result<Identity, WireError> {
        self.add(name).await?;
        Err(WireError::new(
            ErrorCode::Internal,
            "credential engine not built yet",
        ))
    }
}
