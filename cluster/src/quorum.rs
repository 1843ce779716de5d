//! Whether this control-plane node may go away for an upgrade without
//! etcd losing quorum.
//!
//! [`gather`] asks every member how it is (each member's own `/health` and
//! a timed linearizable read through it); [`check`] is the pure decision.
//! The rules, after Talos's upgrade validation:
//!
//! - Every member must be started (an added member that never joined counts
//!   against quorum) and healthy; with [`Departure::Preserve`] this node's
//!   own health does not matter, since it keeps its membership and comes
//!   back (a broken local etcd is a reason to upgrade, not to refuse).
//! - While this node is away the others must still be a majority of the
//!   whole membership. That also covers [`Departure::Leave`]: the node is
//!   added back as a member that has not started yet, so the cluster again
//!   needs a majority of all members without it. A 2-member cluster is
//!   therefore always refused, and a 3-member one with a member down.
//! - The only member may not leave (that would end the cluster); it may
//!   upgrade preserving its membership, etcd being down during the reboot.
//!
//! `force` skips all of it.

use std::fmt;
use std::time::{Duration, Instant};

use crate::gateway::{EndpointHealth, Etcd, Member, MemberId};

/// A key nobody writes: reading it linearizably proves the member can reach
/// the leader and get a quorum's answer.
pub const PROBE_KEY: &str = "/bascule/health-probe";

/// What happens to this node's membership during the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// `member remove` before the reboot, `member add` after (a wiped etcd).
    Leave,
    /// Keep the membership and the data; the member is just down a while.
    Preserve,
}

/// Why a member is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnhealthyReason {
    /// Its `/health` did not answer.
    Unreachable(String),
    /// Its `/health` answered false.
    Reports(String),
    /// The linearizable read through it failed or timed out.
    ReadFailed(String),
    /// The read worked but took longer than the deadline.
    ReadTooSlow { read_ms: u64, deadline_ms: u64 },
}

impl fmt::Display for UnhealthyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnhealthyReason::Unreachable(cause) => f.write_str(cause),
            UnhealthyReason::Reports(reason) => write!(f, "/health false: {reason}"),
            UnhealthyReason::ReadFailed(cause) => write!(f, "read failed: {cause}"),
            UnhealthyReason::ReadTooSlow {
                read_ms,
                deadline_ms,
            } => write!(f, "read took {read_ms} ms (limit {deadline_ms} ms)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Answered a linearizable read in `read_ms`.
    Healthy {
        read_ms: u64,
    },
    Unhealthy(UnhealthyReason),
    /// Added to the cluster but never started: no name, no client URL.
    NotStarted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// Empty while not started.
    pub name: String,
    pub id: MemberId,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub health: Health,
}

impl MemberHealth {
    pub fn is_healthy(&self) -> bool {
        matches!(self.health, Health::Healthy { .. })
    }

    pub fn started(&self) -> bool {
        !matches!(self.health, Health::NotStarted)
    }
}

impl fmt::Display for MemberHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.health {
            Health::Healthy { read_ms } => write!(f, "{} healthy {read_ms} ms", self.name),
            Health::Unhealthy(reason) => {
                write!(f, "{} ({}) unhealthy: {reason}", self.name, self.id)
            }
            Health::NotStarted => write!(
                f,
                "member {} (peer {}) added but not started",
                self.id,
                self.peer_urls.join(",")
            ),
        }
    }
}

/// Why the upgrade is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// The member list was empty: nothing to judge by.
    NoMembers,
    /// This node is the only member and was to leave.
    LastMember,
    /// Fewer members would remain available than a quorum needs.
    WouldLoseQuorum { available: usize, needed: usize },
    /// Quorum would hold, but some member is not started or not healthy.
    MembersUnavailable,
}

/// A refused upgrade: the reason, and every member's state for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumRefusal {
    pub reason: RefusalReason,
    /// This node's member name.
    pub me: String,
    /// Members with a problem first, then the rest, each in list order.
    pub members: Vec<MemberHealth>,
}

impl fmt::Display for QuorumRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.members.len();
        match &self.reason {
            RefusalReason::NoMembers => write!(f, "etcd lists no members, so quorum cannot be checked")?,
            RefusalReason::LastMember => write!(
                f,
                "{} is etcd's only member: leaving would end the cluster; upgrade preserving its membership",
                self.me
            )?,
            RefusalReason::WouldLoseQuorum { available, needed } => write!(
                f,
                "etcd would lose quorum ({available} of {n} members available while {} is away, {needed} needed)",
                self.me
            )?,
            RefusalReason::MembersUnavailable => write!(
                f,
                "every etcd member must be started and healthy before an upgrade"
            )?,
        }
        for (i, member) in self.members.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{member}")?;
        }
        f.write_str("; use --force to upgrade anyway")
    }
}

impl std::error::Error for QuorumRefusal {}

/// Decides whether `me` (a member name) may go away for an upgrade.
pub fn check(
    members: &[MemberHealth],
    me: &str,
    policy: Departure,
    force: bool,
) -> Result<(), QuorumRefusal> {
    if force {
        return Ok(());
    }
    let is_me = |m: &MemberHealth| m.name == me;
    let n = members.len();
    let single_me = n == 1 && members.iter().any(is_me);
    let reason = if n == 0 {
        Some(RefusalReason::NoMembers)
    } else if single_me && policy == Departure::Leave {
        Some(RefusalReason::LastMember)
    } else if single_me {
        None
    } else {
        let available = members
            .iter()
            .filter(|m| !is_me(m) && m.is_healthy())
            .count();
        let needed = n / 2 + 1;
        let counted = |m: &&MemberHealth| policy == Departure::Leave || !is_me(m);
        if available < needed {
            Some(RefusalReason::WouldLoseQuorum { available, needed })
        } else if members.iter().filter(counted).any(|m| !m.is_healthy()) {
            Some(RefusalReason::MembersUnavailable)
        } else {
            None
        }
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            let (mut listed, rest): (Vec<MemberHealth>, Vec<MemberHealth>) =
                members.iter().cloned().partition(|m| !m.is_healthy());
            listed.extend(rest);
            Err(QuorumRefusal {
                reason,
                me: me.to_string(),
                members: listed,
            })
        }
    }
}

/// Every member's health: the member list, then per member (in parallel,
/// so down members cost one deadline, not one each) its `/health` and a
/// linearizable read of [`PROBE_KEY`], which must answer within
/// `read_deadline`. Fails only when the member list cannot be had.
pub fn gather(
    etcd: &Etcd,
    read_deadline: Duration,
) -> Result<Vec<MemberHealth>, crate::gateway::Error> {
    // Without a quorum the current list cannot be had; the (possibly
    // stale) local one still names every member for the refusal.
    let members = etcd.member_list_current().or_else(|_| etcd.member_list())?;
    let client = etcd.with_timeout(read_deadline);
    Ok(std::thread::scope(|scope| {
        let probes: Vec<_> = members
            .iter()
            .map(|member| {
                let client = &client;
                scope.spawn(move || member_health(client, member, read_deadline))
            })
            .collect();
        probes
            .into_iter()
            .zip(&members)
            .map(|(handle, member)| {
                handle.join().unwrap_or_else(|_| MemberHealth {
                    health: Health::Unhealthy(UnhealthyReason::ReadFailed(
                        "the probe thread panicked".to_string(),
                    )),
                    ..unprobed(member)
                })
            })
            .collect()
    }))
}

fn unprobed(member: &Member) -> MemberHealth {
    MemberHealth {
        name: member.name.clone(),
        id: member.id,
        peer_urls: member.peer_urls.clone(),
        client_urls: member.client_urls.clone(),
        health: Health::NotStarted,
    }
}

fn member_health(etcd: &Etcd, member: &Member, read_deadline: Duration) -> MemberHealth {
    let health = match member.client_urls.first() {
        Some(url) if !member.name.is_empty() => probe(&etcd.at(url), read_deadline),
        _ => Health::NotStarted,
    };
    MemberHealth {
        health,
        ..unprobed(member)
    }
}

fn probe(etcd: &Etcd, read_deadline: Duration) -> Health {
    match etcd.health() {
        Ok(EndpointHealth::Healthy) => {}
        Ok(EndpointHealth::Unhealthy { reason }) => {
            return Health::Unhealthy(UnhealthyReason::Reports(reason))
        }
        Err(error) => return Health::Unhealthy(UnhealthyReason::Unreachable(error.cause())),
    }
    let started = Instant::now();
    let read = etcd.range(PROBE_KEY);
    let read_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let deadline_ms = u64::try_from(read_deadline.as_millis()).unwrap_or(u64::MAX);
    match read {
        Err(error) => Health::Unhealthy(UnhealthyReason::ReadFailed(error.cause())),
        Ok(_) if read_ms > deadline_ms => Health::Unhealthy(UnhealthyReason::ReadTooSlow {
            read_ms,
            deadline_ms,
        }),
        Ok(_) => Health::Healthy { read_ms },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(name: &str, id: u64, read_ms: u64) -> MemberHealth {
        MemberHealth {
            name: name.to_string(),
            id: MemberId(id),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![format!("http://{name}:2379")],
            health: Health::Healthy { read_ms },
        }
    }

    fn down(name: &str, id: u64) -> MemberHealth {
        MemberHealth {
            health: Health::Unhealthy(UnhealthyReason::Unreachable(
                "connection refused".to_string(),
            )),
            ..healthy(name, id, 0)
        }
    }

    fn not_started(id: u64) -> MemberHealth {
        MemberHealth {
            name: String::new(),
            client_urls: Vec::new(),
            health: Health::NotStarted,
            ..healthy("cp9", id, 0)
        }
    }

    use Departure::{Leave, Preserve};

    #[test]
    fn rules() {
        let h = |n: &str| healthy(n, 1, 2);
        let d = |n: &str| down(n, 2);
        let quorum = |available, needed| Some(RefusalReason::WouldLoseQuorum { available, needed });
        let cases: Vec<(&str, Vec<MemberHealth>, Departure, Option<RefusalReason>)> = vec![
            (
                "3 healthy, leave",
                vec![h("cp1"), h("cp2"), h("cp3")],
                Leave,
                None,
            ),
            (
                "3 healthy, preserve",
                vec![h("cp1"), h("cp2"), h("cp3")],
                Preserve,
                None,
            ),
            (
                "3, another down, leave",
                vec![h("cp1"), d("cp2"), h("cp3")],
                Leave,
                quorum(1, 2),
            ),
            (
                "3, another down, preserve",
                vec![h("cp1"), d("cp2"), h("cp3")],
                Preserve,
                quorum(1, 2),
            ),
            (
                "3, me down, leave",
                vec![d("cp1"), h("cp2"), h("cp3")],
                Leave,
                Some(RefusalReason::MembersUnavailable),
            ),
            (
                "3, me down, preserve",
                vec![d("cp1"), h("cp2"), h("cp3")],
                Preserve,
                None,
            ),
            (
                "2 healthy, leave",
                vec![h("cp1"), h("cp2")],
                Leave,
                quorum(1, 2),
            ),
            (
                "2 healthy, preserve",
                vec![h("cp1"), h("cp2")],
                Preserve,
                quorum(1, 2),
            ),
            (
                "1, leave",
                vec![h("cp1")],
                Leave,
                Some(RefusalReason::LastMember),
            ),
            ("1, preserve", vec![h("cp1")], Preserve, None),
            ("1 down, preserve", vec![d("cp1")], Preserve, None),
            ("none", vec![], Preserve, Some(RefusalReason::NoMembers)),
            (
                "4 + not started",
                vec![h("cp1"), h("cp2"), h("cp3"), h("cp4"), not_started(5)],
                Leave,
                Some(RefusalReason::MembersUnavailable),
            ),
            (
                "3 + not started",
                vec![h("cp1"), h("cp2"), h("cp3"), not_started(4)],
                Leave,
                quorum(2, 3),
            ),
            (
                "2 + not started",
                vec![h("cp1"), h("cp2"), not_started(4)],
                Preserve,
                quorum(1, 2),
            ),
            (
                "5, another down, preserve",
                vec![h("cp1"), h("cp2"), h("cp3"), h("cp4"), d("cp5")],
                Preserve,
                Some(RefusalReason::MembersUnavailable),
            ),
            (
                "5, two down, preserve",
                vec![h("cp1"), h("cp2"), h("cp3"), d("cp4"), d("cp5")],
                Preserve,
                quorum(2, 3),
            ),
            (
                "5 healthy, leave",
                vec![h("cp1"), h("cp2"), h("cp3"), h("cp4"), h("cp5")],
                Leave,
                None,
            ),
            (
                "4 healthy, leave",
                vec![h("cp1"), h("cp2"), h("cp3"), h("cp4")],
                Leave,
                None,
            ),
            (
                "me not a member",
                vec![h("cp2"), h("cp3"), h("cp4")],
                Leave,
                None,
            ),
        ];
        for (what, members, policy, expected) in cases {
            let result = check(&members, "cp1", policy, false);
            assert_eq!(
                result.as_ref().err().map(|r| r.reason.clone()),
                expected,
                "{what}"
            );
            assert_eq!(
                check(&members, "cp1", policy, true),
                Ok(()),
                "{what} forced"
            );
        }
    }

    #[test]
    fn refusal_names_every_member_problem_first() {
        let members = vec![
            healthy("cp1", 0x1, 3),
            down("cp2", 0x8e9e05c52164694d),
            healthy("cp3", 0x3, 2),
        ];
        let refusal = check(&members, "cp1", Leave, false).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "etcd would lose quorum (1 of 3 members available while cp1 is away, 2 needed): \
             cp2 (8e9e05c52164694d) unhealthy: connection refused; cp1 healthy 3 ms; \
             cp3 healthy 2 ms; use --force to upgrade anyway"
        );
    }

    #[test]
    fn other_messages() {
        let last = check(&[healthy("cp1", 1, 1)], "cp1", Leave, false).unwrap_err();
        assert!(last.to_string().starts_with(
            "cp1 is etcd's only member: leaving would end the cluster; upgrade preserving"
        ));
        let members = vec![
            healthy("cp1", 1, 1),
            healthy("cp2", 2, 1),
            healthy("cp3", 3, 1),
            healthy("cp4", 4, 1),
            not_started(0xab),
        ];
        let unstarted = check(&members, "cp1", Leave, false).unwrap_err();
        assert!(
            unstarted.to_string().starts_with(
                "every etcd member must be started and healthy before an upgrade: \
             member ab (peer http://cp9:2380) added but not started; cp1 healthy 1 ms"
            ),
            "{unstarted}"
        );
        let slow = MemberHealth {
            health: Health::Unhealthy(UnhealthyReason::ReadTooSlow {
                read_ms: 900,
                deadline_ms: 500,
            }),
            ..healthy("cp2", 2, 0)
        };
        assert_eq!(
            slow.to_string(),
            "cp2 (2) unhealthy: read took 900 ms (limit 500 ms)"
        );
    }
}
