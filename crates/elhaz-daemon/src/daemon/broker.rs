//! The in-process broker (`ELHAZ_NO_DAEMON=1`): the daemon's own state and request handlers on a
//! current-thread runtime inside the CLI's process, with no socket — for debugging, and for
//! environments where no daemon may run.
//!
//! `elhaz-core`'s client knows it only as the [`LocalBroker`] trait; the binary registers
//! [`new`] with `client::set_in_process_broker` at start-up. Requests are handled as the
//! owner's (the process is the owner), so every handler and policy path is the daemon's.

use std::sync::Arc;

use crate::client::LocalBroker;
use crate::config::Settings;
use crate::daemon::handler::{self, Peer};
use crate::daemon::policy::Access;
use crate::daemon::state::{Options, State};
use crate::error::Error;
use crate::paths::Paths;
use crate::protocol::{Request, Response, WireError};

struct InProcess {
    runtime: tokio::runtime::Runtime,
    state: Arc<State>,
}

impl LocalBroker for InProcess {
    fn call(&mut self, request: Request) -> Result<Response, WireError> {
        let peer = Peer::new(
            self.state.uid,
            Some(std::process::id() as i32),
            Access::Owner,
        );
        let state = self.state.clone();
        self.runtime
            .block_on(handler::handle(&state, peer, request))
    }
}

/// Builds the broker: `elhaz.toml`, the keyring, the engine and the state, as a daemon would.
pub fn new(paths: &Paths) -> Result<Box<dyn LocalBroker>, Error> {
    let settings = Settings::load(&paths.settings_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    let _ = crate::keyring::init();
    let state = Arc::new(State::build(paths.clone(), settings, Options::default())?);
    Ok(Box::new(InProcess { runtime, state }))
}
