//! `elhaz keyring rotate ENTRY`: rotate the IAM user access key held in a keyring entry.
//!
//! Steps, each bounded: GetCallerIdentity with the current key (who is the user — the IAM
//! user name is the last segment of its ARN), CreateAccessKey for that user, store the new pair
//! in the entry, wait until STS accepts the new key *as the same user* (GetCallerIdentity,
//! retried once a second up to `--verify-timeout`: IAM is eventually consistent), then
//! DeleteAccessKey the old one with the new key, and finally ask a running daemon to drop
//! every cached session whose config reads the entry (`remove`, so the next request loads the
//! new key).
//!
//! No step may leave the user without a working key:
//! - CreateAccessKey fails (the user already has AWS's two keys, no permission): nothing
//!   changed; the error says so.
//! - The new pair cannot be stored, or STS never accepts it: the entry is read back and, if
//!   needed, set back to the old pair; only once it holds the old pair is the new key deleted
//!   (with the old key, which still works). Should that delete fail, the message names the new
//!   key id to delete by hand. Should the entry not take the old pair back, nothing is deleted:
//!   both keys stay in IAM and the old pair goes to `ENTRY.previous` if the keyring takes it.
//! - The old key cannot be deleted: the entry keeps the new pair, the old pair is kept in the
//!   entry `ENTRY.previous` (added to the index, so `keyring list` shows it), and the message
//!   names the old key id; exit status 1.
//!
//! The secrets only ever live in zeroizing memory, the keyring and the HTTPS requests. IAM's
//! endpoint comes from the usual SDK configuration (`AWS_ENDPOINT_URL_IAM`, then
//! `AWS_ENDPOINT_URL`; tests point it at moto), and STS's likewise (`AWS_ENDPOINT_URL_STS`).
//! IAM is a global service: the region is `AWS_REGION` / `AWS_DEFAULT_REGION`, else
//! `us-east-1`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::BehaviorVersion;
use elhaz::credentials::LongTermKeys;
use elhaz::paths::Paths;
use elhaz::sts::ToSdk;
use secrecy::SecretString;

/// How often the new key is tried against STS while waiting for it.
const VERIFY_EVERY: Duration = Duration::from_secs(1);
/// Bound on each AWS call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(paths: &Paths, entry: &str, verify_timeout: Duration) -> Result<ExitCode> {
    super::keyring::check_entry(entry)?;
    let old = elhaz::keyring::read(entry)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(rotate(entry, &old, verify_timeout))?;
    if let Rotated::OldKept { .. } = &outcome {
        // Listed, so `keyring list` shows it and `keyring remove` tidies it up.
        let previous = previous_entry(entry);
        let mut names = super::keyring::read_index(paths);
        if !names.contains(&previous) {
            names.push(previous);
            names.sort();
            if let Err(e) = super::keyring::write_index(paths, &names) {
                eprintln!(
                    "elhaz: cannot list {:?} in the keyring index ({e:#})",
                    previous_entry(entry)
                );
            }
        }
    }
    let dropped = drop_sessions(paths, entry);
    match &outcome {
        Rotated::Done { old_id, new_id } => {
            println!("rotated keyring entry {entry:?}: new key {new_id}, old key {old_id} deleted");
        }
        Rotated::OldKept {
            old_id,
            new_id,
            why,
        } => {
            eprintln!(
                "elhaz: keyring entry {entry:?} now holds the new key {new_id}, but the old key \
                 {old_id} could not be deleted ({why}); it still works and is kept in the \
                 keyring entry {:?}: delete it with `aws iam delete-access-key --access-key-id \
                 {old_id}` once nothing uses it",
                previous_entry(entry)
            );
        }
    }
    match dropped {
        Ok(n) if n > 0 => println!("dropped {n} cached session(s) that used {entry:?}"),
        Ok(_) => {}
        Err(e) => eprintln!(
            "elhaz: could not ask the daemon to drop the sessions that use {entry:?} ({e:#}); \
             they keep the old key until `elhaz daemon remove NAME`"
        ),
    }
    Ok(match outcome {
        Rotated::Done { .. } => ExitCode::SUCCESS,
        Rotated::OldKept { .. } => ExitCode::from(1),
    })
}

fn previous_entry(entry: &str) -> String {
    format!("{entry}.previous")
}

enum Rotated {
    Done {
        old_id: String,
        new_id: String,
    },
    OldKept {
        old_id: String,
        new_id: String,
        why: String,
    },
}

async fn sdk_config(keys: &LongTermKeys) -> aws_config::SdkConfig {
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_string());
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(keys.to_sdk())
        .load()
        .await
}

async fn bounded<T, E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| anyhow!("{what}: {}", elhaz::error::display_chain(&e))),
        Err(_) => bail!("{what}: no answer within {}s", CALL_TIMEOUT.as_secs()),
    }
}

/// The caller's ARN with `keys`.
async fn caller_arn(keys: &LongTermKeys) -> Result<String> {
    let sts = aws_sdk_sts::Client::new(&sdk_config(keys).await);
    let who = bounded("GetCallerIdentity", sts.get_caller_identity().send()).await?;
    who.arn()
        .map(String::from)
        .ok_or_else(|| anyhow!("GetCallerIdentity returned no ARN"))
}

/// The rotation's steps; see the module docs for what each failure leaves behind.
async fn rotate(entry: &str, old: &LongTermKeys, verify_timeout: Duration) -> Result<Rotated> {
    let (arn, user) = iam_user(entry, old).await?;
    let iam_old = aws_sdk_iam::Client::new(&sdk_config(old).await);
    let new = create_key(&iam_old, &user).await?;
    let new_id = new.access_key_id.clone();

    // Store, then verify; on either failure put the old pair back and delete the new key.
    let failed = match elhaz::keyring::set(entry, &new) {
        Err(e) => Some(format!("cannot store the new key in the keyring: {e}")),
        Ok(()) => match verify(&new, &arn, verify_timeout).await {
            Ok(()) => None,
            Err(e) => Some(format!("{e:#}")),
        },
    };
    if let Some(why) = failed {
        let msg = roll_back(entry, old, &iam_old, &user, &new_id, &why).await;
        bail!(msg);
    }
    Ok(delete_old_key(entry, old, &new, &user).await)
}

/// The caller's ARN with the entry's current key, and the IAM user it belongs to.
async fn iam_user(entry: &str, old: &LongTermKeys) -> Result<(String, String)> {
    let arn = caller_arn(old)
        .await
        .with_context(|| format!("the current key of {entry:?} does not work; nothing changed"))?;
    let user = arn
        .split_once(":user/")
        .map(|(_, u)| u.rsplit('/').next().unwrap_or(u).to_string())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "the key of {entry:?} belongs to {arn}, not an IAM user; only IAM user keys can \
                 be rotated; nothing changed"
            )
        })?;
    Ok((arn, user))
}

/// CreateAccessKey for `user`, with the current key.
async fn create_key(iam_old: &aws_sdk_iam::Client, user: &str) -> Result<LongTermKeys> {
    let created = bounded(
        "CreateAccessKey",
        iam_old.create_access_key().user_name(user).send(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot create a new key for IAM user {user}; nothing changed, the current key stays"
        )
    })?;
    let ak = created
        .access_key()
        .ok_or_else(|| anyhow!("CreateAccessKey returned no key"))?;
    let new = LongTermKeys {
        access_key_id: ak.access_key_id().to_string(),
        secret_access_key: SecretString::from(ak.secret_access_key().to_string()),
    };
    drop(created);
    Ok(new)
}

/// After the new key failed (`why`): the entry back to the old key, then the new key deleted
/// — only once the entry holds the old one. Returns the message saying what was left where.
async fn roll_back(
    entry: &str,
    old: &LongTermKeys,
    iam_old: &aws_sdk_iam::Client,
    user: &str,
    new_id: &str,
    why: &str,
) -> String {
    let old_id = &old.access_key_id;
    // What the entry holds now (read back, not assumed: a failed store may or may not
    // have written) decides what may be deleted — never the key the entry holds.
    let holds = |id: &str| elhaz::keyring::read(entry).is_ok_and(|k| k.access_key_id == id);
    let mut restore_error = None;
    if !holds(old_id)
        && let Err(e) = elhaz::keyring::set(entry, old)
    {
        restore_error = Some(e.to_string());
    }
    let mut msg = format!("rotation of {entry:?} failed: {why}.");
    if holds(old_id) {
        msg.push_str(&format!(" The entry keeps the old key {old_id}."));
        match bounded(
            "DeleteAccessKey",
            iam_old
                .delete_access_key()
                .user_name(user)
                .access_key_id(new_id)
                .send(),
        )
        .await
        {
            Ok(_) => msg.push_str(&format!(" The new key {new_id} was deleted.")),
            Err(e) => msg.push_str(&format!(
                " The new key {new_id} could not be deleted ({e:#}): delete it by hand."
            )),
        }
    } else {
        // The entry does not hold the old key and cannot be made to: both keys stay in
        // IAM, and the old pair is kept in ENTRY.previous if the keyring takes it.
        let kept = elhaz::keyring::set(&previous_entry(entry), old).is_ok();
        msg.push_str(&format!(
            " Could not put the old key {old_id} back into the entry ({}); both keys are \
             kept in IAM: the new key {new_id}, and the old key {old_id}{}.",
            restore_error.as_deref().unwrap_or("it does not read back"),
            if kept {
                format!(
                    " (its pair is in the keyring entry {:?})",
                    previous_entry(entry)
                )
            } else {
                String::new()
            }
        ));
    }
    msg
}

/// The new key works: delete the old one with it. If that fails, the old pair is kept in
/// `ENTRY.previous`.
async fn delete_old_key(
    entry: &str,
    old: &LongTermKeys,
    new: &LongTermKeys,
    user: &str,
) -> Rotated {
    let (old_id, new_id) = (old.access_key_id.clone(), new.access_key_id.clone());
    let iam_new = aws_sdk_iam::Client::new(&sdk_config(new).await);
    let deleted = bounded(
        "DeleteAccessKey",
        iam_new
            .delete_access_key()
            .user_name(user)
            .access_key_id(&old_id)
            .send(),
    )
    .await;
    match deleted {
        Ok(_) => Rotated::Done { old_id, new_id },
        Err(e) => {
            let why = format!("{e:#}");
            if let Err(k) = elhaz::keyring::set(&previous_entry(entry), old) {
                eprintln!(
                    "elhaz: cannot keep the old key in {:?} either ({k})",
                    previous_entry(entry)
                );
            }
            Rotated::OldKept {
                old_id,
                new_id,
                why,
            }
        }
    }
}

/// Waits (bounded by `timeout`) until STS accepts `keys` as the user `arn`.
async fn verify(keys: &LongTermKeys, arn: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not tried");
    // Bounded by the deadline and by the attempt count (one a second).
    for _ in 0..=timeout.as_secs().max(1) {
        match caller_arn(keys).await {
            Ok(a) if a == arn => return Ok(()),
            Ok(a) => last = format!("STS sees the new key as {a}, not {arn}"),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() + VERIFY_EVERY > deadline {
            break;
        }
        tokio::time::sleep(VERIFY_EVERY).await;
    }
    bail!(
        "STS did not accept the new key within {}s (last: {last})",
        timeout.as_secs()
    )
}

/// Asks a running daemon (never starting one) to drop every cached session whose config reads
/// `entry`. Returns how many were cached.
fn drop_sessions(paths: &Paths, entry: &str) -> Result<usize> {
    use elhaz::config::{Source, Store};
    use elhaz::protocol::{Request, Response};
    let store = Store::new(paths.configs_dir.clone());
    let users: Vec<String> = store
        .names()?
        .into_iter()
        .filter(|n| {
            store
                .load(n, true)
                .is_ok_and(|c| matches!(c.source(), Source::Keyring(e) if e == entry))
        })
        .collect();
    if users.is_empty() {
        return Ok(0);
    }
    let Some(mut c) = elhaz::client::connect_existing(paths)? else {
        return Ok(0);
    };
    let mut dropped = 0;
    for name in users {
        if let Response::Removed {
            was_cached: true, ..
        } = c.call(Request::Remove { name })?
        {
            dropped += 1;
        }
    }
    Ok(dropped)
}
