//! Admission right after `accept`: the peer's kernel credentials against the policy, and the
//! short typed refusal a refused peer gets.

use super::*;

/// Writes `err` to a refused connection and closes it, in a task bounded by
/// [`MAX_REFUSING`]: beyond that, the connection is closed without a reply.
pub(super) fn refuse(tracker: &TaskTracker, slots: &Slots, stream: UnixStream, err: WireError) {
    let Ok(permit) = slots.refusing.clone().try_acquire_owned() else {
        return;
    };
    tracker.spawn(async move {
        let mut framed = Framed::new(stream, codec::codec());
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, framed.send(error_reply(0, err))).await;
        drop(permit);
    });
}

/// Admits the peer by its kernel-reported credentials and takes its per-peer slot, or says
/// why not.
pub(super) async fn check_peer(
    stream: &UnixStream,
    state: &State,
) -> Result<(Peer, ConnGuard), WireError> {
    use std::os::fd::AsFd;
    let cred = stream.peer_cred().map_err(|e| {
        WireError::new(
            ErrorCode::PermissionDenied,
            format!("cannot read peer credentials: {e}"),
        )
    })?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    // The groups are needed (and read) only for a non-owner of a daemon with allow rules.
    let groups = if uid != state.policy.owner() && state.policy.has_rules() {
        crate::daemon::groups::peer_groups(stream.as_fd(), uid, gid, &state.groups).await
    } else {
        Vec::new()
    };
    let Some(access) = state.policy.admit(uid, &groups) else {
        crate::logging::denial(|| {
            tracing::warn!(
                peer_uid = uid,
                peer_pid = pid.unwrap_or(-1),
                "refused connection from another uid"
            );
        });
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("permission denied: this daemon does not serve uid {uid}"),
        ));
    };
    let Some(conn) = state.policy.connect(uid) else {
        crate::logging::denial(|| {
            tracing::warn!(
                peer_uid = uid,
                "refused connection: per-client connection limit reached"
            );
        });
        return Err(WireError::new(
            ErrorCode::Busy,
            format!(
                "too many connections from uid {uid} (max_connections_per_client / \
                 shared.max_connections_per_peer)"
            ),
        ));
    };
    Ok((Peer::new(uid, pid, access), conn))
}
