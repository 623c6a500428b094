//! A measurement, not a product (`scripts/bench`, issue #12): `elhaz credential-process NAME`'s
//! work linked against `elhaz-core` alone — no clap, no tokio, no AWS SDK — to measure what a
//! separate lean client binary would gain over the one `elhaz` binary. It connects with the real
//! client (peer uid check, protocol frame, typed errors) and prints the credential_process JSON.
//!
//!     lean_client NAME        (ELHAZ_HOME / ELHAZ_SOCKET as for elhaz)

use std::io::Write;
use std::process::ExitCode;

use elhaz_core::client;
use elhaz_core::paths::Paths;
use elhaz_core::protocol::{Request, Response};

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: lean_client NAME");
        return ExitCode::from(2);
    };
    match run(&name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lean_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let paths = Paths::from_env()?;
    let mut c = client::connect_or_start(&paths)?;
    let Response::Credentials(creds) = c.call(Request::Credentials {
        name: name.to_string(),
        mfa_code: None,
    })?
    else {
        return Err("unexpected reply".into());
    };
    let json = serde_json::json!({
        "Version": 1,
        "AccessKeyId": creds.access_key_id,
        "SecretAccessKey": creds.secret_access_key,
        "SessionToken": creds.session_token,
        "Expiration": creds.expiration,
    });
    writeln!(std::io::stdout().lock(), "{json}")?;
    Ok(())
}
