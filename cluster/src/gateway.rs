//! A typed blocking client of etcd's v3 HTTP/JSON gateway.
//!
//! etcd 3.4 serves its gRPC API as JSON over HTTP/1.1 at `/v3/...` (POST a
//! JSON body, get JSON back; the shapes are in the `wire` module).
//! Speaking it with a small HTTP client keeps gRPC, protobuf code
//! generation and an async runtime out of PID 1. Each call tries the
//! endpoints in order and returns the first answer; an endpoint that cannot
//! be reached, or that answers "unavailable" (no leader, request timed
//! out), makes it try the next.

mod body;
mod error;
mod types;
pub(crate) mod wire;

use std::fmt;
use std::io::BufReader;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use body::{complete_json, read_body, read_line, stream_result};
use error::{describe_transport, lease_gone, leased_error};
pub use error::{Attempt, Error};
use types::{lease_field, members};
pub use types::{
    CreateOutcome, EndpointHealth, EventKind, GrpcCode, Header, KeyValue, LeaseId, LeaseTtl,
    Member, MemberId, Status, WatchEvent,
};

/// Read (never written) to make a member catch up before it answers
/// something it serves from its own state.
const CATCH_UP_KEY: &str = "/bascule/catch-up";

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
pub(crate) enum Failure {
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

    /// The same client with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Etcd {
        Etcd {
            timeout,
            ..self.clone()
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
                Err(Failure::TryNext(problem)) => attempts.push(Attempt {
                    endpoint: endpoint.clone(),
                    problem,
                }),
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
            Err(ureq::Error::Transport(transport)) => {
                Err(Failure::TryNext(describe_transport(&transport)))
            }
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
                Err(ureq::Error::Transport(t)) => {
                    return Err(Failure::TryNext(describe_transport(&t)))
                }
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
                // etcd 3.4 gives no reason; these are what its check tests.
                EndpointHealth::Unhealthy {
                    reason: "no leader, an alarm, or a failed read".to_string(),
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

    /// The member list as of now. etcd 3.4 answers the list from the
    /// answering member's applied state, which can lag behind a membership
    /// change the cluster has already committed; a linearizable read
    /// through the same member first makes it catch up with the leader.
    pub fn member_list_current(&self) -> Result<Vec<Member>, Error> {
        self.each_endpoint("/v3/cluster/member/list", |endpoint| {
            let one = self.at(endpoint);
            one.range(CATCH_UP_KEY)
                .and_then(|_| one.member_list())
                .map_err(|e| Failure::TryNext(e.cause()))
        })
    }

    /// Adds a member (not yet started) and returns its id and the new list.
    /// etcd refuses ("unhealthy cluster", as `Error::Unreachable`) while its
    /// leader has been connected to a quorum for less than 5 s, e.g. just
    /// after a member went or the cluster started: try again.
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

#[cfg(test)]
mod tests {
    use super::*;

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
                assert_eq!(attempts[0].endpoint, "http://127.0.0.1:1");
                assert_eq!(attempts[1].problem, "connection refused");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
