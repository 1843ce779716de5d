//! A typed blocking client of etcd's v3 HTTP/JSON gateway.
//!
//! etcd 3.4 serves its gRPC API as JSON over HTTP/1.1 at `/v3/...` (POST a
//! JSON body, get JSON back; the shapes are in [`wire`]). Speaking it with
//! a small HTTP client keeps gRPC, protobuf code generation and an async
//! runtime out of PID 1. Each call tries the endpoints in order and returns
//! the first answer; an endpoint that cannot be reached, or that answers
//! "unavailable" (no leader, request timed out), makes it try the next.

pub(crate) mod wire;

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    fn member_specific(self) -> bool {
        matches!(self, GrpcCode::Unavailable | GrpcCode::DeadlineExceeded)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no etcd endpoints to ask for {path}: configure [etcd] endpoints")]
    NoEndpoints { path: &'static str },
    #[error("no etcd endpoint answered {path}: {}; check that etcd runs and the addresses are right", attempts.join("; "))]
    Unreachable {
        path: &'static str,
        /// `endpoint: why`, one per endpoint tried.
        attempts: Vec<String>,
    },
    #[error("etcd at {endpoint} refused {path}: {message} ({code:?})")]
    Etcd {
        endpoint: String,
        path: &'static str,
        code: GrpcCode,
        message: String,
    },
    #[error("etcd at {endpoint} answered {path} with something unexpected: {problem}")]
    Decode {
        endpoint: String,
        path: &'static str,
        problem: String,
    },
    #[error("lease {lease} is gone (expired or revoked) according to etcd at {endpoint}; grant a new one")]
    LeaseGone { lease: LeaseId, endpoint: String },
    #[error("etcd at {endpoint} canceled the watch of {key:?}: {reason}")]
    WatchCanceled {
        endpoint: String,
        key: String,
        reason: String,
    },
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

fn members(list: Vec<wire::Member>) -> Vec<Member> {
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

fn lease_field(id: i64) -> Option<LeaseId> {
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

/// The end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): "\0" means "every key from `key` on".
    vec![0]
}

fn whole_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn seconds(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// How one endpoint failed a call: whether another endpoint may do better.
enum Failure {
    TryNext(String),
    Final(Error),
}

/// The client. Cheap to clone (the HTTP agent and its connections are shared).
#[derive(Clone)]
pub struct Etcd {
    endpoints: Vec<String>,
    timeout: Duration,
    agent: ureq::Agent,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Etcd {
    /// A client of the cluster at `endpoints` (client URLs such as
    /// `http://169.254.10.1:2379`), each call bounded by `timeout` per endpoint.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Etcd {
        let endpoints = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        Etcd {
            endpoints,
            timeout,
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    /// The same client talking to one member only (sharing connections).
    pub fn at(&self, endpoint: &str) -> Etcd {
        Etcd {
            endpoints: vec![endpoint.trim_end_matches('/').to_string()],
            timeout: self.timeout,
            agent: self.agent.clone(),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `attempt` against each endpoint until one gives a final answer.
    fn each_endpoint<T>(
        &self,
        path: &'static str,
        mut attempt: impl FnMut(&str) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::NoEndpoints { path });
        }
        let mut attempts = Vec::new();
        for endpoint in &self.endpoints {
            match attempt(endpoint) {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::TryNext(why)) => attempts.push(format!("{endpoint}: {why}")),
            }
        }
        Err(Error::Unreachable { path, attempts })
    }

    /// POSTs `body` to `path` and decodes a unary answer.
    fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &Req,
    ) -> Result<Resp, Error> {
        let body = serde_json::to_string(body).map_err(|e| Error::Decode {
            endpoint: String::new(),
            path,
            problem: format!("cannot encode the request: {e}"),
        })?;
        self.each_endpoint(path, |endpoint| {
            let response = self.post(endpoint, path, &body, self.timeout)?;
            let text = response
                .into_string()
                .map_err(|e| Failure::TryNext(format!("reading the answer: {e}")))?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::Final(Error::Decode {
                    endpoint: endpoint.to_string(),
                    path,
                    problem: format!("{e} in {text:?}"),
                })
            })
        })
    }

    /// Sends one POST; etcd's error bodies become `Error::Etcd`.
    fn post(
        &self,
        endpoint: &str,
        path: &'static str,
        body: &str,
        timeout: Duration,
    ) -> Result<ureq::Response, Failure> {
        let request = self
            .agent
            .post(&format!("{endpoint}{path}"))
            .timeout(timeout)
            .set("Content-Type", "application/json");
        match request.send_string(body) {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let text = read_body(response).unwrap_or_else(|(partial, _)| partial);
                match serde_json::from_str::<wire::ErrorBody>(&text) {
                    Ok(error) => {
                        let code = GrpcCode::from_u32(error.code);
                        let message = if error.message.is_empty() {
                            error.error
                        } else {
                            error.message
                        };
                        if code.member_specific() {
                            Err(Failure::TryNext(message))
                        } else {
                            Err(Failure::Final(Error::Etcd {
                                endpoint: endpoint.to_string(),
                                path,
                                code,
                                message,
                            }))
                        }
                    }
                    Err(_) => Err(Failure::TryNext(format!("HTTP {status}: {}", text.trim()))),
                }
            }
            Err(ureq::Error::Transport(transport)) => Err(Failure::TryNext(transport.to_string())),
        }
    }

    /// `GET /health` of the first endpoint that answers.
    pub fn health(&self) -> Result<EndpointHealth, Error> {
        const PATH: &str = "/health";
        self.each_endpoint(PATH, |endpoint| {
            let response = match self
                .agent
                .get(&format!("{endpoint}{PATH}"))
                .timeout(self.timeout)
                .call()
            {
                Ok(response) => response,
                // 503 carries {"health":"false"}: an answer, not a failure.
                Err(ureq::Error::Status(_, response)) => response,
                Err(ureq::Error::Transport(t)) => return Err(Failure::TryNext(t.to_string())),
            };
            let text = read_body(response)
                .or_else(|(partial, error)| complete_json(partial, &error))
                .map_err(|e| Failure::TryNext(format!("reading the answer: {e}")))?;
            let body: wire::HealthBody = serde_json::from_str(&text).map_err(|e| {
                Failure::Final(Error::Decode {
                    endpoint: endpoint.to_string(),
                    path: PATH,
                    problem: format!("{e} in {text:?}"),
                })
            })?;
            Ok(if body.health == "true" {
                EndpointHealth::Healthy
            } else if body.reason.is_empty() {
                EndpointHealth::Unhealthy {
                    reason: format!("reports health {:?}", body.health),
                }
            } else {
                EndpointHealth::Unhealthy {
                    reason: body.reason,
                }
            })
        })
    }

    pub fn status(&self) -> Result<Status, Error> {
        let s: wire::StatusResponse = self.call("/v3/maintenance/status", &wire::Empty {})?;
        Ok(Status {
            header: s.header.into(),
            version: s.version,
            leader: (s.leader != 0).then_some(MemberId(s.leader)),
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            db_size: s.db_size,
            errors: s.errors,
        })
    }

    pub fn member_list(&self) -> Result<Vec<Member>, Error> {
        let list: wire::MemberListResponse =
            self.call("/v3/cluster/member/list", &wire::Empty {})?;
        Ok(members(list.members))
    }

    /// Adds a member (not yet started) and returns its id and the new list.
    pub fn member_add(&self, peer_urls: Vec<String>) -> Result<(MemberId, Vec<Member>), Error> {
        let added: wire::MemberAddResponse = self.call(
            "/v3/cluster/member/add",
            &wire::MemberAddRequest { peer_urls },
        )?;
        Ok((MemberId(added.member.id), members(added.members)))
    }

    /// Removes a member and returns the remaining list.
    pub fn member_remove(&self, id: MemberId) -> Result<Vec<Member>, Error> {
        let removed: wire::MemberRemoveResponse = self.call(
            "/v3/cluster/member/remove",
            &wire::MemberRemoveRequest { id: id.0 },
        )?;
        Ok(members(removed.members))
    }

    fn range_request(&self, request: wire::RangeRequest) -> Result<Vec<KeyValue>, Error> {
        let range: wire::RangeResponse = self.call("/v3/kv/range", &request)?;
        Ok(range.kvs.into_iter().map(KeyValue::from).collect())
    }

    /// A linearizable read of one key: goes through the leader, so it fails
    /// (after the timeout) without quorum.
    pub fn range(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        Ok(self
            .range_request(wire::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..wire::RangeRequest::default()
            })?
            .into_iter()
            .next())
    }

    /// A serializable read of one key: the answering member's local copy,
    /// which may be stale but needs no quorum.
    pub fn range_serializable(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        Ok(self
            .range_request(wire::RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: true,
                ..wire::RangeRequest::default()
            })?
            .into_iter()
            .next())
    }

    /// Every key starting with `prefix`, in key order (linearizable).
    pub fn range_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        self.range_request(wire::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..wire::RangeRequest::default()
        })
    }

    /// Writes `key`; with a lease it disappears when the lease does.
    pub fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<(), Error> {
        let request = wire::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            lease: lease.map_or(0, |l| l.0),
        };
        match self.call::<_, wire::PutResponse>("/v3/kv/put", &request) {
            Ok(_) => Ok(()),
            Err(error) => Err(leased_error(error, lease)),
        }
    }

    /// Deletes `key`; returns how many keys went (0 or 1).
    pub fn delete(&self, key: &str) -> Result<i64, Error> {
        let deleted: wire::DeleteRangeResponse = self.call(
            "/v3/kv/deleterange",
            &wire::DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
            },
        )?;
        Ok(deleted.deleted)
    }

    /// Creates `key` only if it does not exist (its create_revision is 0),
    /// in one transaction that otherwise reads what is there.
    pub fn txn_create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<CreateOutcome, Error> {
        const PATH: &str = "/v3/kv/txn";
        let key_bytes = key.as_bytes().to_vec();
        let txn = wire::TxnRequest {
            compare: vec![wire::Compare {
                key: key_bytes.clone(),
                target: "CREATE",
                create_revision: 0,
            }],
            success: vec![wire::RequestOp::Put(wire::PutRequest {
                key: key_bytes.clone(),
                value: value.to_vec(),
                lease: lease.map_or(0, |l| l.0),
            })],
            failure: vec![wire::RequestOp::Range(wire::RangeRequest {
                key: key_bytes,
                ..wire::RangeRequest::default()
            })],
        };
        let answer: wire::TxnResponse = match self.call(PATH, &txn) {
            Ok(answer) => answer,
            Err(error) => return Err(leased_error(error, lease)),
        };
        if answer.succeeded {
            return Ok(CreateOutcome::Created);
        }
        let kv = answer
            .responses
            .into_iter()
            .filter_map(|op| op.response_range)
            .flat_map(|range| range.kvs)
            .next();
        match kv {
            Some(kv) => Ok(CreateOutcome::Exists {
                value: kv.value,
                lease: lease_field(kv.lease),
                mod_revision: kv.mod_revision,
            }),
            // The compare failed, so the key existed; it went between the
            // compare and the read only if etcd broke its own guarantees.
            None => Err(Error::Decode {
                endpoint: self.endpoints.join(", "),
                path: PATH,
                problem: format!("the create of {key:?} failed but reading it found nothing"),
            }),
        }
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up); returns its id
    /// and the TTL etcd granted (it raises TTLs below its minimum).
    pub fn lease_grant(&self, ttl: Duration) -> Result<(LeaseId, Duration), Error> {
        let granted: wire::LeaseResponse = self.call(
            "/v3/lease/grant",
            &wire::LeaseGrantRequest {
                ttl: whole_seconds(ttl),
            },
        )?;
        if !granted.error.is_empty() {
            return Err(Error::Etcd {
                endpoint: self.endpoints.join(", "),
                path: "/v3/lease/grant",
                code: GrpcCode::Unknown,
                message: granted.error,
            });
        }
        Ok((LeaseId(granted.id), seconds(granted.ttl)))
    }

    /// Renews the lease once; returns its TTL again. `Error::LeaseGone` once
    /// it has expired or been revoked.
    pub fn lease_keepalive(&self, lease: LeaseId) -> Result<Duration, Error> {
        const PATH: &str = "/v3/lease/keepalive";
        let body = serde_json::to_string(&wire::LeaseIdRequest { id: lease.0 }).map_err(|e| {
            Error::Decode {
                endpoint: String::new(),
                path: PATH,
                problem: format!("cannot encode the request: {e}"),
            }
        })?;
        // A bidirectional stream over HTTP/1.1: the request body is the one
        // keep-alive, the answer is a stream of `{"result": ...}` lines
        // which etcd ends after answering it.
        self.each_endpoint(PATH, |endpoint| {
            let response = self.post(endpoint, PATH, &body, self.timeout)?;
            let mut reader = BufReader::new(response.into_reader());
            let line: wire::StreamLine<wire::LeaseResponse> =
                read_line(&mut reader, endpoint, PATH)?.ok_or_else(|| {
                    Failure::TryNext("the stream ended without an answer".to_string())
                })?;
            let answer = stream_result(line, endpoint, PATH)?;
            if answer.ttl <= 0 {
                return Err(Failure::Final(Error::LeaseGone {
                    lease,
                    endpoint: endpoint.to_string(),
                }));
            }
            Ok(seconds(answer.ttl))
        })
    }

    /// Revokes the lease, deleting every key attached to it.
    pub fn lease_revoke(&self, lease: LeaseId) -> Result<(), Error> {
        self.call::<_, wire::LeaseResponse>(
            "/v3/lease/revoke",
            &wire::LeaseIdRequest { id: lease.0 },
        )
        .map(|_| ())
        .map_err(|error| lease_gone(error, lease))
    }

    /// How long the lease has left, and its keys.
    pub fn lease_time_to_live(&self, lease: LeaseId) -> Result<LeaseTtl, Error> {
        let answer: wire::LeaseResponse = self
            .call(
                "/v3/lease/timetolive",
                &wire::LeaseTimeToLiveRequest {
                    id: lease.0,
                    keys: true,
                },
            )
            .map_err(|error| lease_gone(error, lease))?;
        if answer.ttl < 0 {
            return Err(Error::LeaseGone {
                lease,
                endpoint: self.endpoints.join(", "),
            });
        }
        Ok(LeaseTtl {
            remaining: seconds(answer.ttl),
            granted: seconds(answer.granted_ttl),
            keys: answer
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect(),
        })
    }

    /// Watches `key` from `start_revision` (0: from now) until a response
    /// with events arrives, and returns those events; returns no events if
    /// `deadline` passes first. Enough to block until a key changes.
    pub fn watch(
        &self,
        key: &str,
        start_revision: i64,
        deadline: Instant,
    ) -> Result<Vec<WatchEvent>, Error> {
        const PATH: &str = "/v3/watch";
        let body = serde_json::to_string(&wire::WatchRequest {
            create_request: wire::WatchCreateRequest {
                key: key.as_bytes().to_vec(),
                start_revision,
            },
        })
        .map_err(|e| Error::Decode {
            endpoint: String::new(),
            path: PATH,
            problem: format!("cannot encode the request: {e}"),
        })?;
        let result = self.each_endpoint(PATH, |endpoint| {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let response = match self.post(endpoint, PATH, &body, left) {
                Err(Failure::TryNext(_)) if Instant::now() >= deadline => return Ok(Vec::new()),
                other => other?,
            };
            let mut reader = BufReader::new(response.into_reader());
            loop {
                let line: wire::StreamLine<wire::WatchResponse> =
                    match read_line(&mut reader, endpoint, PATH) {
                        Ok(Some(line)) => line,
                        // The stream only ends when the connection does.
                        Ok(None) => {
                            return Err(Failure::TryNext("the watch stream ended".to_string()))
                        }
                        Err(_) if Instant::now() >= deadline => return Ok(Vec::new()),
                        Err(failure) => return Err(failure),
                    };
                let answer = stream_result(line, endpoint, PATH)?;
                if answer.canceled {
                    let reason = if answer.compact_revision != 0 {
                        format!(
                            "revision {start_revision} is compacted (oldest kept: {}); watch from a later one",
                            answer.compact_revision
                        )
                    } else {
                        answer.cancel_reason
                    };
                    return Err(Failure::Final(Error::WatchCanceled {
                        endpoint: endpoint.to_string(),
                        key: key.to_string(),
                        reason,
                    }));
                }
                if !answer.events.is_empty() {
                    return Ok(answer
                        .events
                        .into_iter()
                        .map(|event| WatchEvent {
                            kind: match event.kind {
                                wire::EventType::Put => EventKind::Put,
                                wire::EventType::Delete => EventKind::Delete,
                            },
                            kv: event.kv.into(),
                        })
                        .collect());
                }
            }
        });
        match result {
            // Every endpoint failed only because time ran out.
            Err(Error::Unreachable { .. }) if Instant::now() >= deadline => Ok(Vec::new()),
            other => other,
        }
    }
}

/// etcd's "requested lease not found" as the typed `LeaseGone`.
fn lease_gone(error: Error, lease: LeaseId) -> Error {
    match error {
        Error::Etcd {
            endpoint,
            code: GrpcCode::NotFound,
            message,
            ..
        } if message.contains("lease not found") => Error::LeaseGone { lease, endpoint },
        other => other,
    }
}

fn leased_error(error: Error, lease: Option<LeaseId>) -> Error {
    match lease {
        Some(lease) => lease_gone(error, lease),
        None => error,
    }
}

/// The whole body, or what was read before an error. etcd ends chunked
/// error bodies with an HTTP trailer (`Grpc-Trailer-Content-Type`) that
/// ureq's chunked decoder rejects after the JSON has arrived whole.
fn read_body(response: ureq::Response) -> Result<String, (String, std::io::Error)> {
    let mut bytes = Vec::new();
    let result = response.into_reader().read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match result {
        Ok(_) => Ok(text),
        Err(error) => Err((text, error)),
    }
}

/// Accepts a body cut short by an error if it is already a whole JSON value.
fn complete_json(partial: String, error: &std::io::Error) -> Result<String, String> {
    if serde_json::from_str::<serde_json::Value>(&partial).is_ok() {
        Ok(partial)
    } else {
        Err(error.to_string())
    }
}

/// Reads one JSON line of a stream; None at its end.
fn read_line<T: DeserializeOwned>(
    reader: &mut impl BufRead,
    endpoint: &str,
    path: &'static str,
) -> Result<Option<T>, Failure> {
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| Failure::TryNext(format!("reading the stream: {e}")))?;
        if read == 0 {
            return Ok(None);
        }
        if line.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(line.trim()).map(Some).map_err(|e| {
            Failure::Final(Error::Decode {
                endpoint: endpoint.to_string(),
                path,
                problem: format!("{e} in {line:?}"),
            })
        });
    }
}

fn stream_result<T>(
    line: wire::StreamLine<T>,
    endpoint: &str,
    path: &'static str,
) -> Result<T, Failure> {
    if let Some(error) = line.error {
        let code = GrpcCode::from_u32(error.grpc_code);
        return Err(if code.member_specific() {
            Failure::TryNext(error.message)
        } else {
            Failure::Final(Error::Etcd {
                endpoint: endpoint.to_string(),
                path,
                code,
                message: error.message,
            })
        });
    }
    line.result.ok_or_else(|| {
        Failure::Final(Error::Decode {
            endpoint: endpoint.to_string(),
            path,
            problem: "a stream line with neither result nor error".to_string(),
        })
    })
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

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/bascule/nodes/"), b"/bascule/nodes0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn ttl_rounds_up_to_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(seconds(-1), Duration::ZERO);
    }

    #[test]
    fn no_endpoints_is_an_error_naming_the_call() {
        let etcd = Etcd::new(Vec::new(), Duration::from_millis(100));
        let error = etcd.status().unwrap_err();
        assert!(
            error.to_string().contains("/v3/maintenance/status"),
            "{error}"
        );
    }

    #[test]
    fn unreachable_names_every_endpoint() {
        // Port 1 on loopback: nothing listens there, so the connection is refused at once.
        let etcd = Etcd::new(
            vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:1/".into()],
            Duration::from_millis(500),
        );
        match etcd.range("k") {
            Err(Error::Unreachable { path, attempts }) => {
                assert_eq!(path, "/v3/kv/range");
                assert_eq!(attempts.len(), 2);
                assert!(
                    attempts[0].starts_with("http://127.0.0.1:1: "),
                    "{attempts:?}"
                );
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn lease_not_found_becomes_lease_gone() {
        let error = Error::Etcd {
            endpoint: "http://e".into(),
            path: "/v3/lease/revoke",
            code: GrpcCode::NotFound,
            message: "etcdserver: requested lease not found".into(),
        };
        assert!(matches!(
            lease_gone(error, LeaseId(1)),
            Error::LeaseGone {
                lease: LeaseId(1),
                ..
            }
        ));
    }

    #[test]
    fn stream_errors_are_typed() {
        let line: wire::StreamLine<wire::LeaseResponse> = serde_json::from_str(
            r#"{"error":{"grpc_code":5,"message":"etcdserver: requested lease not found"}}"#,
        )
        .unwrap();
        match stream_result(line, "http://e", "/v3/lease/keepalive") {
            Err(Failure::Final(Error::Etcd { code, .. })) => assert_eq!(code, GrpcCode::NotFound),
            _ => panic!("expected a final etcd error"),
        }
    }
}
