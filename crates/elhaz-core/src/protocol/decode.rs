//! The one request decoder the server and the fuzz target share ([`decode_request`]), the
//! protocol mismatch error, and the typed start report a detached daemon writes to the CLI.

use super::*;

/// A frame the daemon will not serve: the error to answer with, under the request's `id` (0
/// when the frame did not even carry one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The id to answer under.
    pub id: u64,
    /// The typed error.
    pub error: WireError,
}

/// Decodes one request frame exactly as the daemon does; the server and the fuzz target call
/// this one function, so what is fuzzed is what is served.
///
/// 1. [`Probe`] first (`protocol` and `id` only), so a peer speaking another protocol version
///    always gets a typed `protocol_mismatch` rather than a parse error.
/// 2. The whole [`RequestFrame`].
/// 3. Its `op` must have been a JSON string: serde also reads an integer as an enum's variant
///    *index*, so `"op":2` would otherwise parse as `stop`.
pub fn decode_request(bytes: &[u8]) -> Result<RequestFrame, Rejected> {
    #[derive(Deserialize)]
    struct Op {
        op: serde_json::Value,
    }
    let bad = |id, message: String| Rejected {
        id,
        error: WireError::new(ErrorCode::BadRequest, message),
    };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| bad(0, format!("malformed frame: {e}")))?;
    if probe.protocol != PROTOCOL_VERSION {
        return Err(Rejected {
            id: probe.id,
            error: protocol_mismatch(probe.protocol),
        });
    }
    let frame: RequestFrame = serde_json::from_slice(bytes)
        .map_err(|e| bad(probe.id, format!("malformed request: {e}")))?;
    if !serde_json::from_slice::<Op>(bytes).is_ok_and(|o| o.op.is_string()) {
        return Err(bad(
            probe.id,
            "malformed request: `op` must be a string".into(),
        ));
    }
    Ok(frame)
}

/// The error a peer speaking `peer_protocol` gets: it names both versions and the way out.
pub fn protocol_mismatch(peer_protocol: u32) -> WireError {
    let mut e = WireError::new(
        ErrorCode::ProtocolMismatch,
        format!(
            "daemon speaks protocol {PROTOCOL_VERSION}, this client speaks {peer_protocol}: run \
             `elhaz daemon stop` (the next command starts a matching daemon)"
        ),
    );
    e.protocol = Some(PROTOCOL_VERSION);
    e
}

/// The line a detached daemon writes to its start-up pipe (its stderr, which the spawning CLI
/// reads until EOF) once it knows how the start ended: [`START_REPORT_PREFIX`] followed by a
/// JSON [`StartReport`]. Anything else on the pipe is the daemon's error text, shown as is. The
/// CLI decides "started" or "already running" from this typed line, never from message text.
pub const START_REPORT_PREFIX: &str = "elhaz-start-report ";

/// How a detached daemon's start ended (see [`START_REPORT_PREFIX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StartReport {
    /// This process serves the socket now.
    Ready {
        /// Its pid.
        pid: u32,
    },
    /// Another daemon holds the run directory's lock.
    AlreadyRunning {
        /// The other daemon's pid, when its pid file says.
        pid: Option<u32>,
    },
}

impl StartReport {
    /// The line to write, newline included.
    pub fn line(&self) -> String {
        // serde_json cannot fail on this enum of integers (no maps with non-string keys).
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{START_REPORT_PREFIX}{json}\n")
    }

    /// Splits what the start-up pipe carried into the report (the last well-formed report
    /// line, if any) and the rest of the text.
    pub fn parse(text: &str) -> (Option<StartReport>, String) {
        let mut report = None;
        let mut rest = String::new();
        for line in text.lines() {
            match line
                .strip_prefix(START_REPORT_PREFIX)
                .and_then(|j| serde_json::from_str(j).ok())
            {
                Some(r) => report = Some(r),
                None => {
                    rest.push_str(line);
                    rest.push('\n');
                }
            }
        }
        (report, rest)
    }
}
