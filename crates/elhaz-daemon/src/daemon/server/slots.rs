//! The connection slots: the global and per-peer caps, the owner's reserved slots, waiting
//! for a slot, and evicting the connection idle longest (peeked, never a request in flight).

use super::*;

/// The connection slots: open, owner-reserved, and who is idle.
#[derive(Debug)]
pub(super) struct Slots {
    pub(super) open: Arc<Semaphore>,
    pub(super) reserved: Arc<Semaphore>,
    pub(super) waiting: Arc<Semaphore>,
    pub(super) refusing: Arc<Semaphore>,
    /// Connections waiting for a request, oldest first.
    pub(super) idle: Mutex<BTreeMap<u64, IdleEntry>>,
    pub(super) seq: AtomicU64,
}

#[derive(Debug)]
pub(super) struct IdleEntry {
    pub(super) reserved: bool,
    /// No request received yet on this connection.
    pub(super) silent: bool,
    pub(super) since: tokio::time::Instant,
    pub(super) evict: CancellationToken,
}

/// A connection's slot: the global permit and the peer's own. Dropping it returns both.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) reserved: bool,
    pub(super) _peer: ConnGuard,
}

/// Registration as idle (evictable); removed on drop.
pub(super) struct IdleMark<'a> {
    pub(super) slots: &'a Slots,
    pub(super) key: u64,
}

impl Drop for IdleMark<'_> {
    fn drop(&mut self) {
        self.slots
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Slots {
    pub(super) fn new(max: usize) -> Slots {
        let reserved = OWNER_RESERVED.min(max / 2);
        Slots {
            open: Arc::new(Semaphore::new(max - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            idle: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
        }
    }

    /// A free slot now, if any: open first, then (owner only) reserved.
    pub(super) fn try_take(&self, owner: bool) -> Option<(OwnedSemaphorePermit, bool)> {
        if let Ok(p) = self.open.clone().try_acquire_owned() {
            return Some((p, false));
        }
        if owner && let Ok(p) = self.reserved.clone().try_acquire_owned() {
            return Some((p, true));
        }
        None
    }

    /// Waits for a slot.
    pub(super) async fn take(&self, owner: bool) -> Option<(OwnedSemaphorePermit, bool)> {
        if owner {
            tokio::select! {
                p = self.open.clone().acquire_owned() => p.ok().map(|p| (p, false)),
                p = self.reserved.clone().acquire_owned() => p.ok().map(|p| (p, true)),
            }
        } else {
            self.open
                .clone()
                .acquire_owned()
                .await
                .ok()
                .map(|p| (p, false))
        }
    }

    /// Closes the longest-idle connection whose slot `owner` (or not) may use.
    pub(super) fn evict(&self, owner: bool) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Oldest first (keys are in marking order): the first usable one idle long enough.
        let key = idle
            .iter()
            .find(|(_, e)| {
                let min = if e.silent {
                    EVICT_MIN_SILENT
                } else {
                    EVICT_MIN_IDLE
                };
                (owner || !e.reserved) && e.since.elapsed() >= min
            })
            .map(|(k, _)| *k);
        match key.and_then(|k| idle.remove(&k)) {
            Some(e) => {
                e.evict.cancel();
                true
            }
            None => false,
        }
    }

    pub(super) fn mark_idle<'a>(
        &'a self,
        slot: &Slot,
        silent: bool,
        evict: &CancellationToken,
    ) -> IdleMark<'a> {
        let key = self.seq.fetch_add(1, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            IdleEntry {
                reserved: slot.reserved,
                silent,
                since: tokio::time::Instant::now(),
                evict: evict.clone(),
            },
        );
        IdleMark { slots: self, key }
    }
}

/// Waits for a slot for `stream`, evicting (every [`EVICT_POLL`]) the longest-idle connection
/// that has been silent for [`EVICT_MIN_SILENT`] or idle for [`EVICT_MIN_IDLE`]. Only a
/// waiter that has sent something competes for slots: a silent one just waits for its first
/// byte, and is closed after [`WAIT_SILENT_LIMIT`] (a real client sends its request as soon
/// as it connects), so silent connections cannot crowd the waiting room. `None`: closed or
/// shutdown.
pub(super) async fn wait_for_slot(
    stream: &UnixStream,
    slots: &Slots,
    owner: bool,
    cancel: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, bool)> {
    let arrived = tokio::time::Instant::now();
    loop {
        match peek(stream) {
            Peek::Closed => return None,
            Peek::Silent => {
                if arrived.elapsed() >= WAIT_SILENT_LIMIT {
                    return None;
                }
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    _ = tokio::time::timeout(EVICT_POLL, data_ready(stream)) => {}
                }
                continue;
            }
            Peek::Data => {}
        }
        if let Some(t) = slots.try_take(owner) {
            return Some(t);
        }
        slots.evict(owner);
        tokio::select! {
            () = cancel.cancelled() => return None,
            r = tokio::time::timeout(EVICT_POLL, slots.take(owner)) => {
                if let Ok(Some(t)) = r {
                    return Some(t);
                }
            }
        }
    }
}

/// What a non-blocking `MSG_PEEK` says about a connection.
pub(super) enum Peek {
    Data,
    Silent,
    Closed,
}

pub(super) fn peek(stream: &UnixStream) -> Peek {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => Peek::Closed,
        Ok(_) => Peek::Data,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Peek::Silent,
        Err(_) => Peek::Closed,
    }
}
