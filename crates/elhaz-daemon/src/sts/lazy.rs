//! [`LazySts`]: the fetcher a daemon runs with — the SDK loaded on the first fetch, every call
//! under the `fetch_timeout` deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{BoxFuture, Fetch, FetchRequest, Fetched, StsFetcher};
use crate::config::{self, SessionConfig};
use crate::credentials::Credentials;
use crate::protocol::{ErrorCode, Identity, WireError};

/// A [`StsFetcher`] loaded on first use: an idle daemon (no session yet) never touches the
/// AWS SDK, which keeps its start-up short and its resident memory small. The environment it
/// reads is the daemon's own, which does not change after start.
///
/// Each fetch runs under one overall deadline (`fetch_timeout`): when it passes, the fetch's
/// future is dropped, which kills the process group of any child it was running.
#[derive(Debug, Clone)]
pub struct LazySts {
    cell: Arc<tokio::sync::OnceCell<StsFetcher>>,
    deadline: Duration,
}

impl Default for LazySts {
    fn default() -> Self {
        LazySts::with_deadline(Duration::from_secs(config::DEFAULT_FETCH_TIMEOUT))
    }
}

impl LazySts {
    /// An unloaded fetcher with the default fetch deadline.
    pub fn new() -> LazySts {
        LazySts::default()
    }

    /// An unloaded fetcher whose fetches each end after `deadline`.
    pub fn with_deadline(deadline: Duration) -> LazySts {
        LazySts {
            cell: Arc::default(),
            deadline,
        }
    }
}

impl Fetch for LazySts {
    fn mfa_expiration(&self, config: &SessionConfig) -> Option<SystemTime> {
        self.cell.get()?.mfa_expiration(config)
    }

    fn sso(&self) -> BoxFuture<Option<Arc<crate::sso::Sso>>> {
        let cell = self.cell.clone();
        Box::pin(async move { Some(cell.get_or_init(StsFetcher::load).await.inner.sso.clone()) })
    }

    fn session_retired(&self, name: &str) {
        // Nothing to tell an engine that was never loaded.
        if let Some(f) = self.cell.get() {
            f.session_retired(name);
        }
    }

    fn federation_token(
        &self,
        req: FetchRequest,
        duration_s: u32,
    ) -> BoxFuture<Result<Fetched, WireError>> {
        let (cell, deadline) = (self.cell.clone(), self.deadline);
        Box::pin(async move {
            let name = req.name.clone();
            let call = async {
                cell.get_or_init(StsFetcher::load)
                    .await
                    .federation_token(req, duration_s)
                    .await
            };
            tokio::time::timeout(deadline, call)
                .await
                .unwrap_or_else(|_| {
                    Err(WireError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "GetFederationToken for session {name:?} took longer than \
                             fetch_timeout ({}s)",
                            deadline.as_secs()
                        ),
                    ))
                })
        })
    }

    fn fetch(&self, req: FetchRequest) -> BoxFuture<Result<Fetched, WireError>> {
        let (cell, deadline) = (self.cell.clone(), self.deadline);
        Box::pin(async move {
            let name = req.name.clone();
            let fetch = async { cell.get_or_init(StsFetcher::load).await.fetch(req).await };
            tokio::time::timeout(deadline, fetch)
                .await
                .unwrap_or_else(|_| {
                    Err(WireError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "fetching session {name:?} took longer than fetch_timeout ({}s); its \
                         child processes were killed",
                            deadline.as_secs()
                        ),
                    ))
                })
        })
    }

    fn whoami(
        &self,
        config: Arc<SessionConfig>,
        creds: Arc<Credentials>,
    ) -> BoxFuture<Result<Identity, WireError>> {
        let cell = self.cell.clone();
        Box::pin(async move {
            cell.get_or_init(StsFetcher::load)
                .await
                .whoami(config, creds)
                .await
        })
    }
}
