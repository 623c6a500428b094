//! Links both executables as fixed-address (non-PIE) binaries on Linux.
//!
//! `elhaz-full` carries the AWS SDK, so a position-independent image holds ~38,000 relative
//! relocations that the dynamic loader rewrites at every start — over half the instructions of
//! a `credential-process` run, and megabytes of pages made dirty (resident) in every process,
//! the daemon included. Linked non-PIE, those are resolved once, at link time. The cost is
//! that the main image is not address-randomised (libraries, stack and heap still are) —
//! the same trade-off Go makes by default for aws-vault and granted. The lean `elhaz` has
//! ~1,700 relocations, whose pages are still a measurable part of a 1 ms run; it is linked the
//! same way. See docs/performance.md.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let disabled = std::env::var_os("ELHAZ_PIE").is_some_and(|v| v == "1");
    println!("cargo:rerun-if-env-changed=ELHAZ_PIE");
    if os == "linux" && !disabled {
        println!("cargo:rustc-link-arg-bin=elhaz=-no-pie");
        println!("cargo:rustc-link-arg-bin=elhaz-full=-no-pie");
    }
}
