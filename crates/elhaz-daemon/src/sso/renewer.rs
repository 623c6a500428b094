//! The background renewal of one start URL's access token: a task per entry that sleeps until
//! the token is due (and only while it holds one it can renew), renews it with the refresh
//! token, and ends with the last cached session that uses the start URL. With nothing to
//! renew it waits on a `Notify` alone, so an idle daemon is never woken.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::logins::{Entry, Sso, adopt_disk, ahead, disk_cache, settings};

/// How long the renewer waits after a renewal that failed for a passing reason (network,
/// throttling), doubling from 30 s up to 5 min.
pub(super) fn retry_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    (Duration::from_secs(30) * 2u32.saturating_pow(failures.min(5) - 1))
        .min(Duration::from_secs(300))
}

/// The background renewal of one start URL's access token.
///
/// It sleeps until the token is due for renewal, and only while it holds a token it can
/// renew; otherwise it waits for [`Entry::wake`] alone (no timer, so an idle or logged-out
/// start URL never wakes the daemon). It ends when no cached session uses the start URL, when
/// the entry is dropped (`sso logout`), or when the daemon's fetcher goes. Bounded: one
/// iteration per renewal attempt or wake-up.
pub(super) async fn refresher(sso: Weak<Sso>, entry: Arc<Entry>) {
    let mut failures = 0u32;
    loop {
        if !entry.wanted() {
            entry.renewing.store(false, Ordering::SeqCst);
            // A user may have arrived between the check and the store: keep running then.
            if !entry.wanted() || entry.renewing.swap(true, Ordering::SeqCst) {
                tracing::debug!(start_url = %entry.target.start_url, "SSO renewer ends: no session uses it");
                return;
            }
        }
        let wait = {
            let guard = entry.token.lock().await;
            match guard.as_ref() {
                Some((t, life)) if t.can_refresh() => Some(
                    t.remaining()
                        .saturating_sub(ahead(*life))
                        .max(retry_after(failures))
                        .clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                ),
                _ => None,
            }
        };
        let woken = match wait {
            None => {
                entry.wake.notified().await;
                true
            }
            Some(w) => tokio::select! {
                () = tokio::time::sleep(w) => false,
                () = entry.wake.notified() => true,
            },
        };
        entry.wakeups.fetch_add(1, Ordering::Relaxed);
        if woken {
            // Something changed (a token, the users): look again.
            failures = 0;
            continue;
        }
        let Some(sso) = sso.upgrade() else { return };
        let disk = disk_cache(&settings());
        let mut guard = entry.token.lock().await;
        adopt_disk(&mut guard, &entry.target, disk);
        let due = match guard.as_ref() {
            Some((t, life)) => t.can_refresh() && t.remaining() <= ahead(*life),
            None => false,
        };
        if due {
            // A refused renewal is noticed by the next fetch once the token has expired;
            // until then the token is used to its end.
            match sso.refresh_locked(&mut guard, &entry.target, disk).await {
                Ok(()) => {
                    failures = 0;
                    entry.login_required.store(false, Ordering::Relaxed);
                }
                Err(_) => failures = failures.saturating_add(1),
            }
        }
    }
}
