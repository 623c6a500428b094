//! The `elhaz-full` binary — every command and the daemon (the lean `elhaz`, `src/front.rs`,
//! hands it every command line it does not serve): parse, run, map the outcome to an exit
//! code — nothing else.

use std::process::ExitCode;

use clap::Parser;

mod commands;

use elhaz::cli;

fn main() -> ExitCode {
    // `ELHAZ_NO_DAEMON=1` runs the daemon's handlers in this process; the client (elhaz-core)
    // reaches them only through this registration, a function pointer stored once.
    elhaz::client::set_in_process_broker(elhaz_daemon::daemon::broker::new);
    // The hot paths (`credential-process NAME`, `exec NAME -- CMD…`) skip clap: building the
    // full command tree is a quarter of credential-process's instructions.
    let cli = match cli::fast_path(std::env::args_os()) {
        Some(cli) => cli,
        None => {
            // Answers shell completion requests (`COMPLETE=bash elhaz …`); returns otherwise.
            clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
                .complete();
            cli::Cli::parse()
        }
    };
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // A closed stdout (e.g. `elhaz config list | head -1`) is not a failure.
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("elhaz: {err:#}");
            commands::exit_code_for(&err)
        }
    }
}
