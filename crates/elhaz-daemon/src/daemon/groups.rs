//! The peer's groups, for the `group = …` allow rules of a shared daemon.
//!
//! On Linux they are the kernel's record of the connecting process: the gid from
//! `SO_PEERCRED` plus `SO_PEERGROUPS`, one `getsockopt` and no NSS lookup, so a process that
//! dropped a group (`setpriv --clear-groups`, a sandbox) loses that group's sessions.
//! Elsewhere there is no such socket option, and the groups come from the group database
//! (`getgrouplist`), which cannot see a dropped group (documented in docs/security.md).
//!
//! That lookup is NSS: it may go to LDAP or a directory service and block for seconds. The
//! daemon runs on two runtime workers, so it never runs on one: it goes to tokio's blocking
//! pool (`spawn_blocking`), and its answer is kept per (uid, gid) in a [`GroupCache`] for
//! [`GROUPS_TTL`] (a failed lookup for [`GROUPS_FAILED_TTL`]), at most [`GROUPS_CAP`] entries.
//!
//! Trade-offs:
//! - A group change in the directory reaches a connected-to daemon up to [`GROUPS_TTL`] later
//!   (the same order as `nscd`'s own cache). Linux, which reads the socket, is unaffected.
//! - The peer check runs in the accept loop, before a connection costs a task or a slot, so a
//!   cache miss still delays *accepting* (not the runtime: other connections and refreshes go
//!   on) by one lookup — at most once per uid a minute while the directory answers, once per
//!   uid every few seconds while it fails. Checking in a task per connection would remove that
//!   wait but admit unchecked connections into tasks first; the cache makes the wait rare.
//! - Failed lookups are cached too, briefly, so a peer that reconnects in a loop while the
//!   directory is down cannot keep the accept loop waiting on it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a looked-up group list is used.
pub const GROUPS_TTL: Duration = Duration::from_secs(60);
/// How long a failed lookup (the directory did not answer) stands before the next try.
pub const GROUPS_FAILED_TTL: Duration = Duration::from_secs(5);
/// Most (uid, gid) pairs whose groups are kept.
pub const GROUPS_CAP: usize = 1024;

/// The peer's groups at connect time: `gid` (from SO_PEERCRED) plus, on Linux, the
/// supplementary groups the kernel recorded for the socket (`SO_PEERGROUPS`). Elsewhere: the
/// user's groups from the group database (a dropped group is not seen there; documented),
/// looked up off the runtime and cached in `cache`.
pub async fn peer_groups(
    fd: std::os::fd::BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    cache: &GroupCache,
) -> Vec<u32> {
    let mut groups = vec![gid];
    #[cfg(target_os = "linux")]
    {
        let _ = (uid, cache);
        match so_peergroups(fd) {
            Ok(list) => groups.extend(list),
            Err(e) => tracing::warn!(error = %e, "cannot read the peer's groups (SO_PEERGROUPS)"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        groups.extend(cache.groups(uid, gid, move || nss_groups(uid, gid)).await);
    }
    groups
}

/// The groups of `uid`'s user with primary group `gid` in the group database (blocking NSS);
/// `None` if the user or the list cannot be read.
///
/// libc's `getgrouplist` directly: nix has none on Apple targets, and the C signature differs
/// (`gid_t` on Linux and the BSDs, `int` on Apple — both 32-bit, hence the inferred casts).
/// Linux never calls it (`SO_PEERGROUPS`); it is compiled there for its unit test, so CI
/// builds the code macOS runs.
#[cfg(any(not(target_os = "linux"), test))]
fn nss_groups(uid: u32, gid: u32) -> Option<Vec<u32>> {
    /// Most groups a user may have that we read (Linux's NGROUPS_MAX).
    const MAX_GROUPS: usize = 65_536;
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    let name = std::ffi::CString::new(user.name).ok()?;
    let mut room: usize = 64;
    loop {
        let mut list = vec![0u32; room];
        let mut n: nix::libc::c_int = nix::libc::c_int::try_from(room).ok()?;
        // SAFETY: `name` is NUL-terminated and outlives the call; `list` has room for `n`
        // 4-byte entries (gid_t or int), and getgrouplist writes at most `n` of them.
        let found = unsafe {
            nix::libc::getgrouplist(name.as_ptr(), gid as _, list.as_mut_ptr().cast(), &mut n)
        };
        if found >= 0 {
            list.truncate(usize::try_from(n).ok()?.min(room));
            return Some(list);
        }
        // Too small: glibc says how much is needed in `n`, Apple does not; grow either way.
        if room >= MAX_GROUPS {
            return None;
        }
        room = (room * 4)
            .max(usize::try_from(n).unwrap_or(0))
            .min(MAX_GROUPS);
    }
}

/// Group lists by (uid, gid), each until its deadline; bounded by [`GROUPS_CAP`]. The `std`
/// mutex is held for map operations only, never across the lookup.
#[derive(Debug)]
pub struct GroupCache {
    ttl: Duration,
    failed_ttl: Duration,
    cap: usize,
    entries: Mutex<Entries>,
}

/// Group lists by (uid, gid), with when each stops being used.
type Entries = HashMap<(u32, u32), (Vec<u32>, Instant)>;

impl Default for GroupCache {
    fn default() -> Self {
        GroupCache::new(GROUPS_TTL, GROUPS_FAILED_TTL, GROUPS_CAP)
    }
}

// Linux reads the peer's groups from the socket and never looks them up: the cache is built
// (it is part of the shared state) but only other platforms and the unit tests query it.
#[cfg_attr(all(target_os = "linux", not(test)), allow(dead_code))]
impl GroupCache {
    /// A cache keeping answers for `ttl` (failures for `failed_ttl`), at most `cap` of them.
    pub fn new(ttl: Duration, failed_ttl: Duration, cap: usize) -> GroupCache {
        GroupCache {
            ttl,
            failed_ttl,
            cap: cap.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The supplementary groups of (`uid`, `gid`): cached while fresh, else from `look_up`,
    /// run on tokio's blocking pool (it may block on NSS), and cached — a failure (`None`)
    /// as no groups, for the shorter time.
    pub async fn groups<F>(&self, uid: u32, gid: u32, look_up: F) -> Vec<u32>
    where
        F: FnOnce() -> Option<Vec<u32>> + Send + 'static,
    {
        if let Some(groups) = self.get((uid, gid), Instant::now()) {
            return groups;
        }
        let found = tokio::task::spawn_blocking(look_up)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the group lookup task failed");
                None
            });
        if found.is_none() {
            tracing::warn!(
                peer_uid = uid,
                "cannot read the peer's groups from the group database"
            );
        }
        let ttl = if found.is_some() {
            self.ttl
        } else {
            self.failed_ttl
        };
        let groups = found.unwrap_or_default();
        self.put((uid, gid), groups.clone(), Instant::now() + ttl);
        groups
    }

    /// Number of entries held (fresh or not yet pruned).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Map operations only: a poisoned guard is still a consistent map.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: (u32, u32), now: Instant) -> Option<Vec<u32>> {
        self.lock()
            .get(&key)
            .filter(|(_, until)| *until > now)
            .map(|(groups, _)| groups.clone())
    }

    /// Stores an entry; when full, expired entries go first, then the one that expires
    /// soonest (bounded work: one pass over at most [`GROUPS_CAP`] entries).
    fn put(&self, key: (u32, u32), groups: Vec<u32>, until: Instant) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.cap && !map.contains_key(&key) {
            map.retain(|_, (_, t)| *t > now);
            if map.len() >= self.cap
                && let Some(soonest) = map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k)
            {
                map.remove(&soonest);
            }
        }
        map.insert(key, (groups, until));
    }
}

#[cfg(target_os = "linux")]
fn so_peergroups(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    // NGROUPS_MAX is 65536; start small and grow once to the size the kernel asks for.
    let mut buf: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = libc::socklen_t::try_from(buf.len() * std::mem::size_of::<libc::gid_t>())
            .unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `buf` is a live, writable allocation of `len` bytes for the whole call, and
        // `len` is a valid pointer to its size; the kernel writes at most `len` bytes and
        // stores the size it used (or needs, with ERANGE) back into `len`. The fd is borrowed,
        // so it stays open during the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            buf.truncate(n);
            return Ok(buf);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > buf.len() && n <= 65_536 {
            buf = vec![0; n];
            continue;
        }
        return Err(err);
    }
    Err(std::io::Error::other("the peer's group list kept growing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The lookup other platforms use, against this machine's group database: our own user's
    /// list holds our primary group, and an unknown uid has none.
    #[test]
    fn the_group_database_lookup_reads_our_own_groups() {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let groups = nss_groups(uid, gid).expect("our own user is in the database");
        assert!(
            groups.contains(&gid),
            "{groups:?} lacks our primary group {gid}"
        );
        assert_eq!(nss_groups(4_000_000_000, 0), None);
    }

    /// A lookup that counts its calls and answers `answer`.
    fn counting(
        calls: &Arc<AtomicUsize>,
        answer: Option<Vec<u32>>,
    ) -> impl FnOnce() -> Option<Vec<u32>> + Send + 'static {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            answer
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_reused_until_its_ttl_passes() {
        let cache = GroupCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let g = cache
            .groups(1001, 100, counting(&calls, Some(vec![100, 7])))
            .await;
        assert_eq!(g, [100, 7]);
        tokio::time::advance(GROUPS_TTL - Duration::from_secs(1)).await;
        let g = cache
            .groups(1001, 100, counting(&calls, Some(vec![9])))
            .await;
        assert_eq!(g, [100, 7], "still the first answer");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one lookup within the TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        let g = cache
            .groups(1001, 100, counting(&calls, Some(vec![9])))
            .await;
        assert_eq!(g, [9], "looked up again after the TTL");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_is_retried_sooner_and_grants_no_group() {
        let cache = GroupCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        assert!(
            cache
                .groups(1001, 100, counting(&calls, None))
                .await
                .is_empty()
        );
        assert!(
            cache
                .groups(1001, 100, counting(&calls, None))
                .await
                .is_empty()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the failure is cached");
        tokio::time::advance(GROUPS_FAILED_TTL + Duration::from_millis(1)).await;
        let g = cache
            .groups(1001, 100, counting(&calls, Some(vec![7])))
            .await;
        assert_eq!(g, [7], "retried after the short TTL, not the long one");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_per_uid_and_gid() {
        let cache = GroupCache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        cache
            .groups(1001, 100, counting(&calls, Some(vec![1])))
            .await;
        cache
            .groups(1002, 100, counting(&calls, Some(vec![2])))
            .await;
        let g = cache
            .groups(1001, 200, counting(&calls, Some(vec![3])))
            .await;
        assert_eq!(g, [3]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded_and_drops_expired_then_soonest_entries() {
        let cache = GroupCache::new(Duration::from_secs(60), Duration::from_secs(5), 2);
        let calls = Arc::new(AtomicUsize::new(0));
        cache.groups(1, 1, counting(&calls, Some(vec![1]))).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        cache.groups(2, 2, counting(&calls, Some(vec![2]))).await;
        // Full: uid 1's entry expires soonest and makes room.
        cache.groups(3, 3, counting(&calls, Some(vec![3]))).await;
        assert_eq!(cache.len(), 2);
        let now = Instant::now();
        assert_eq!(cache.get((1, 1), now), None, "uid 1 was dropped");
        assert_eq!(cache.get((2, 2), now), Some(vec![2]));
        assert_eq!(cache.get((3, 3), now), Some(vec![3]));
        // Once they have expired, every expired entry goes to make room.
        tokio::time::advance(Duration::from_secs(61)).await;
        cache.groups(4, 4, counting(&calls, Some(vec![4]))).await;
        assert_eq!(cache.len(), 1, "only the new entry is left");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
