//! The keyring check: the OS store answers (a lookup of a random entry must say "not found").

use super::*;

pub(super) fn check_keyring(r: &mut Report, users: &[String]) {
    use elhaz::keyring::KeyringError;
    let hint = if cfg!(target_os = "macos") {
        "unlock the login keychain (`security unlock-keychain`)"
    } else {
        "check that `keyctl show` works (containers may block keyctl; `keyctl session` starts a \
         session keyring), or keep keys in an AWS profile instead"
    };
    let result = elhaz::keyring::init().and_then(|()| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        elhaz::keyring::read(&format!(
            "elhaz-doctor-probe-{}-{nanos:x}",
            std::process::id()
        ))
        .map(|_| ())
    });
    let needed = if users.is_empty() {
        String::new()
    } else {
        format!("; used by {}", users.join(", "))
    };
    let status = if users.is_empty() {
        Status::Warn
    } else {
        Status::Fail
    };
    match result {
        Err(KeyringError::NotFound(_)) => {
            r.ok("keyring", format!("the OS keyring answers{needed}"))
        }
        Ok(()) => r.ok("keyring", format!("the OS keyring answers{needed}")),
        Err(e @ KeyringError::Unavailable(_)) => {
            r.add(status, "keyring", e.to_string(), Some(hint.into()))
        }
        Err(e) => r.add(status, "keyring", e.to_string(), Some(hint.into())),
    }
}
