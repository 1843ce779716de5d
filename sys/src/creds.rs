//! User and group names resolved from /etc/passwd and /etc/group before
//! fork (name lookups are not async-signal-safe, and a static PID 1 has no NSS).

use std::path::Path;

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, the primary one first.
    pub groups: Vec<u32>,
}

/// A name that does not resolve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredsError {
    /// No such user.
    #[error("user {0:?} is not in /etc/passwd")]
    NoUser(String),
    /// No such group.
    #[error("group {0:?} is not in /etc/group")]
    NoGroup(String),
}

/// Resolves `user` and `group` (names or numbers) against `etc`'s
/// passwd and group files; None when neither is given.
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
    etc: &Path,
) -> Result<Option<Creds>, CredsError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let groups = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    resolve_in(user, group, &passwd, &groups).map(Some)
}

fn resolve_in(
    user: Option<&str>,
    group: Option<&str>,
    passwd: &str,
    group_file: &str,
) -> Result<Creds, CredsError> {
    let (uid, primary, name) = match user {
        None => (0, 0, None),
        Some(u) => match u.parse::<u32>() {
            Ok(n) => (n, n, None),
            Err(_) => {
                let fields: Vec<&str> = passwd
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 4 && f[0] == u)
                    .ok_or_else(|| CredsError::NoUser(u.to_owned()))?;
                let uid = fields[2]
                    .parse()
                    .map_err(|_| CredsError::NoUser(u.to_owned()))?;
                let gid = fields[3]
                    .parse()
                    .map_err(|_| CredsError::NoUser(u.to_owned()))?;
                (uid, gid, Some(u))
            }
        },
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_file
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| CredsError::NoGroup(g.to_owned()))?,
        },
    };
    // Supplementary groups: those listing the user by name.
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in group_file.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Ok(Creds { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\netcd:x:120:130::/var/lib/etcd:/bin/false\n";
    const GROUP: &str = "root:x:0:\netcd:x:130:\ndisk:x:6:etcd,other\nwww:x:33:\n";

    #[test]
    fn resolves_names_numbers_and_supplementary_groups() {
        let c = resolve_in(Some("etcd"), None, PASSWD, GROUP).unwrap();
        assert_eq!(
            c,
            Creds {
                uid: 120,
                gid: 130,
                groups: vec![130, 6]
            }
        );
        let c = resolve_in(Some("1000"), Some("www"), PASSWD, GROUP).unwrap();
        assert_eq!(
            c,
            Creds {
                uid: 1000,
                gid: 33,
                groups: vec![33]
            }
        );
        assert_eq!(
            resolve_in(Some("nobody2"), None, PASSWD, GROUP),
            Err(CredsError::NoUser("nobody2".into()))
        );
        assert_eq!(
            resolve_in(None, Some("nogroup2"), PASSWD, GROUP),
            Err(CredsError::NoGroup("nogroup2".into()))
        );
    }
}
