//! The values the client hands out: typed ids and what etcd answers,
//! converted from the wire shapes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire;

/// An etcd member's id. etcdctl prints it in hex, and so does `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl FromStr for MemberId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(text, 16).map(MemberId)
    }
}

/// A lease id. etcdctl prints it as 16 hex digits, and so does `Display`;
/// our own JSON records store it that way too, so the operator can paste it
/// into `etcdctl lease revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for LeaseId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Lease ids are positive int64s; parse as u64 so 16 digits fit.
        u64::from_str_radix(text, 16).map(|id| LeaseId(id as i64))
    }
}

impl Serialize for LeaseId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LeaseId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("lease id {text:?}: {e}")))
    }
}

/// gRPC status codes, as etcd puts them in error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    Other(u32),
}

impl GrpcCode {
    pub fn from_u32(code: u32) -> GrpcCode {
        use GrpcCode::*;
        match code {
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            other => Other(other),
        }
    }

    /// Worth asking another member: this one has no leader or timed out.
    pub(super) fn member_specific(self) -> bool {
        matches!(self, GrpcCode::Unavailable | GrpcCode::DeadlineExceeded)
    }
}

/// `GET /health`'s verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHealth {
    Healthy,
    Unhealthy { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: MemberId,
    pub revision: i64,
    pub raft_term: u64,
}

impl From<wire::ResponseHeader> for Header {
    fn from(h: wire::ResponseHeader) -> Self {
        Header {
            cluster_id: h.cluster_id,
            member_id: MemberId(h.member_id),
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

/// `/v3/maintenance/status` of the member that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub header: Header,
    pub version: String,
    /// None while the member knows of no leader.
    pub leader: Option<MemberId>,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub db_size: i64,
    /// What the member says is wrong with it, e.g. "etcdserver: no leader".
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// Empty until the member has started (added but never joined).
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    pub client_urls: Vec<String>,
}

impl From<wire::Member> for Member {
    fn from(m: wire::Member) -> Self {
        Member {
            id: MemberId(m.id),
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
        }
    }
}

pub(super) fn members(list: Vec<wire::Member>) -> Vec<Member> {
    list.into_iter().map(Member::from).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Bascule's keys are text; other bytes are replaced, not refused.
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: Option<LeaseId>,
}

impl From<wire::KeyValue> for KeyValue {
    fn from(kv: wire::KeyValue) -> Self {
        KeyValue {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: lease_field(kv.lease),
        }
    }
}

pub(super) fn lease_field(id: i64) -> Option<LeaseId> {
    (id != 0).then_some(LeaseId(id))
}

/// What `txn_create` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// Someone else's key: its value, lease, and the revision it was last
    /// written at (a watch from the next revision sees it go).
    Exists {
        value: Vec<u8>,
        lease: Option<LeaseId>,
        mod_revision: i64,
    },
}

/// `/v3/lease/timetolive` of a live lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTtl {
    pub remaining: Duration,
    pub granted: Duration,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_like_etcdctl() {
        assert_eq!(MemberId(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
        assert_eq!(LeaseId(0x694d77aa9e38260f).to_string(), "694d77aa9e38260f");
        assert_eq!(LeaseId(0x1f).to_string(), "000000000000001f");
        assert_eq!(
            "694d77aa9e38260f".parse::<LeaseId>().unwrap(),
            LeaseId(0x694d77aa9e38260f)
        );
        assert_eq!(
            "8e9e05c52164694d".parse::<MemberId>().unwrap(),
            MemberId(0x8e9e05c52164694d)
        );
        assert_eq!(
            serde_json::to_string(&LeaseId(0x1f)).unwrap(),
            "\"000000000000001f\""
        );
        assert_eq!(
            serde_json::from_str::<LeaseId>("\"000000000000001f\"").unwrap(),
            LeaseId(0x1f)
        );
    }
}
