//! Who may do what on the admin socket. The socket file is mode 0660, owned by the admin group;
//! on top of that, every connection's credentials (SO_PEERCRED: the peer's uid, gid and pid,
//! plus the supplementary groups from `/proc/<pid>/status`) are checked per request:
//! - root and the daemon's own user may do everything;
//! - members of `admin_group` may make read-only requests (status, vms, profile, predict,
//!   store stats and export);
//! - members of `admin_write_group` may also change things (vm start and stop).
//!
//! Group names are resolved through `/etc/group` when the daemon starts; a group that does not
//! exist grants nothing.

use augur_admin::{AdminError, ErrorCode, Request};
use tokio::net::UnixStream;
use tracing::warn;

/// The credentials of a connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
    /// The primary group and every supplementary group.
    pub gids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    daemon_uid: Option<u32>,
    read: Option<(String, u32)>,
    write: Option<(String, u32)>,
}

/// Whether a request changes anything.
pub fn is_mutating(request: &Request) -> bool {
    matches!(
        request,
        Request::VmStart { .. }
            | Request::VmStop { .. }
            | Request::Migrate(_)
            | Request::Drain { .. }
            | Request::Pause
            | Request::Resume
    )
}

/// The gid of group `name` in the text of `/etc/group`.
fn gid_in(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// A `Uid:` or `Groups:` line of a `/proc/<pid>/status` text, as numbers.
fn status_ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl AccessPolicy {
    /// Resolves the configured groups; empty names grant nothing.
    pub fn new(read_group: &str, write_group: &str) -> AccessPolicy {
        let etc_group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let resolve = |name: &str| {
            if name.is_empty() {
                return None;
            }
            let gid = gid_in(&etc_group, name);
            if gid.is_none() {
                warn!(
                    group = name,
                    "admin group not found in /etc/group: it grants nothing"
                );
            }
            gid.map(|g| (name.to_string(), g))
        };
        let daemon_uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_ids(&s, "Uid:").first().copied());
        AccessPolicy {
            daemon_uid,
            read: resolve(read_group),
            write: resolve(write_group),
        }
    }

    /// The gid the socket file should belong to.
    pub fn socket_gid(&self) -> Option<u32> {
        self.read.as_ref().map(|(_, gid)| *gid)
    }

    pub fn check(&self, peer: &Peer, request: &Request) -> Result<(), AdminError> {
        if peer.uid == 0 || Some(peer.uid) == self.daemon_uid {
            return Ok(());
        }
        let member = |group: &Option<(String, u32)>| {
            group
                .as_ref()
                .is_some_and(|(_, gid)| peer.gids.contains(gid))
        };
        let allowed = if is_mutating(request) {
            member(&self.write)
        } else {
            member(&self.read) || member(&self.write)
        };
        if allowed {
            return Ok(());
        }
        let needs = if is_mutating(request) {
            self.write.as_ref().map_or_else(
                || "root (no admin_write_group is configured)".to_string(),
                |(name, _)| format!("root or group {name}"),
            )
        } else {
            self.read.as_ref().map_or_else(
                || "root (admin_group does not exist)".to_string(),
                |(name, _)| format!("root or group {name}"),
            )
        };
        Err(AdminError::new(
            ErrorCode::PermissionDenied,
            format!("uid {} may not do this: it needs {needs}", peer.uid),
        ))
    }
}

/// The credentials of the process at the other end of `stream`.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let mut gids = vec![cred.gid()];
    if let Some(pid) = cred.pid() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            gids.extend(status_ids(&status, "Groups:"));
        }
    }
    Ok(Peer {
        uid: cred.uid(),
        pid: cred.pid(),
        gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETC_GROUP: &str = "root:x:0:\nnogroup:x:65534:\naugur:x:998:alice,bob\nops:x:1001:\n";

    fn policy(read: &str, write: &str) -> AccessPolicy {
        AccessPolicy {
            daemon_uid: Some(0),
            read: gid_in(ETC_GROUP, read).map(|g| (read.to_string(), g)),
            write: gid_in(ETC_GROUP, write).map(|g| (write.to_string(), g)),
        }
    }

    fn peer(uid: u32, gids: &[u32]) -> Peer {
        Peer {
            uid,
            pid: None,
            gids: gids.to_vec(),
        }
    }

    #[test]
    fn groups_and_proc_status_parse() {
        assert_eq!(gid_in(ETC_GROUP, "augur"), Some(998));
        assert_eq!(gid_in(ETC_GROUP, "aug"), None);
        let status = "Name:\taugurctl\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 998 \n";
        assert_eq!(status_ids(status, "Groups:"), vec![4, 24, 998]);
        assert_eq!(status_ids(status, "Uid:")[0], 1000);
    }

    #[test]
    fn readers_read_writers_write_and_everyone_else_is_told_what_is_needed() {
        let p = policy("augur", "ops");
        let stop = Request::VmStop { vm: "x".into() };
        assert!(p.check(&peer(0, &[0]), &stop).is_ok());
        assert!(p.check(&peer(1000, &[100, 998]), &Request::Status).is_ok());
        let denied = p.check(&peer(1000, &[100, 998]), &stop).unwrap_err();
        assert_eq!(denied.code, ErrorCode::PermissionDenied);
        assert!(denied.message.contains("group ops"), "{}", denied.message);
        assert!(p.check(&peer(1001, &[1001]), &stop).is_ok());
        assert!(p.check(&peer(1001, &[1001]), &Request::Vms).is_ok());
        assert!(p.check(&peer(1002, &[1002]), &Request::Vms).is_err());
        let root_only = policy("missing", "");
        let denied = root_only.check(&peer(5, &[998]), &stop).unwrap_err();
        assert!(
            denied.message.contains("no admin_write_group"),
            "{}",
            denied.message
        );
    }
}
