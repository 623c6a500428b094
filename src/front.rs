//! The `elhaz` binary users run: lean, linked against `elhaz-core` alone. It serves
//! `credential-process` and `exec` when a running daemon answers with credentials and hands
//! every other command line to `elhaz-full` ([`elhaz_core::front`] says how and why).

fn main() -> std::process::ExitCode {
    elhaz_core::front::main()
}
