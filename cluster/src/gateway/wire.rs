//! The JSON shapes of etcd 3.4's grpc-gateway (`/v3/...`), as the server
//! writes and reads them: proto field names as written in rpc.proto (so
//! `cluster_id` but `peerURLs`, `dbSize`, `ID`, `TTL`), bytes as base64,
//! 64-bit integers as JSON strings, and fields left out when they hold their
//! zero value (a false bool, a 0, an empty list, the first enum variant).
//! Kept apart from the client so each shape can be tested against the bytes
//! etcd sends.

use serde::{Deserialize, Serialize};

/// 64-bit integers travel as decimal strings; numbers are accepted too.
pub(crate) mod int64 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text<T> {
        Number(T),
        String(String),
    }

    fn parse<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr + Deserialize<'de>,
        T::Err: std::fmt::Display,
    {
        match Text::<T>::deserialize(deserializer)? {
            Text::Number(n) => Ok(n),
            Text::String(s) => s
                .parse()
                .map_err(|e| de::Error::custom(format!("64-bit integer {s:?}: {e}"))),
        }
    }

    pub fn serialize<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        parse(deserializer)
    }

    pub(crate) mod unsigned {
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(value)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
            super::parse(deserializer)
        }
    }
}

/// Bytes travel as standard base64.
pub(crate) mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| de::Error::custom(format!("base64 {text:?}: {e}")))
    }

    pub(crate) mod list {
        use super::STANDARD;
        use base64::Engine;
        use serde::{de, Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<Vec<u8>>, D::Error> {
            Vec::<String>::deserialize(deserializer)?
                .into_iter()
                .map(|text| {
                    STANDARD
                        .decode(text.as_bytes())
                        .map_err(|e| de::Error::custom(format!("base64 {text:?}: {e}")))
                })
                .collect()
        }
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// etcd's answer to a failed unary call (any HTTP status but 200).
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: u32,
}

/// `GET /health`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct HealthBody {
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ResponseHeader {
    #[serde(default, with = "int64::unsigned")]
    pub cluster_id: u64,
    #[serde(default, with = "int64::unsigned")]
    pub member_id: u64,
    #[serde(default, with = "int64")]
    pub revision: i64,
    #[serde(default, with = "int64::unsigned")]
    pub raft_term: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct Empty {}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct StatusResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub version: String,
    #[serde(default, rename = "dbSize", with = "int64")]
    pub db_size: i64,
    #[serde(default, with = "int64::unsigned")]
    pub leader: u64,
    #[serde(default, rename = "raftIndex", with = "int64::unsigned")]
    pub raft_index: u64,
    #[serde(default, rename = "raftTerm", with = "int64::unsigned")]
    pub raft_term: u64,
    #[serde(default, rename = "raftAppliedIndex", with = "int64::unsigned")]
    pub raft_applied_index: u64,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Member {
    #[serde(default, rename = "ID", with = "int64::unsigned")]
    pub id: u64,
    /// Empty until the member has started and published itself.
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct MemberListResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Serialize)]
pub struct MemberAddRequest {
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct MemberAddResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    pub member: Member,
    #[serde(default)]
    pub members: Vec<Member>,
}

/// Also the body of lease revoke, keep-alive and time-to-live, whose id
/// field is `ID` too.
#[derive(Debug, Serialize)]
pub struct MemberRemoveRequest {
    #[serde(rename = "ID", with = "int64::unsigned")]
    pub id: u64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct MemberRemoveResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Serialize, Default)]
pub struct RangeRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty", with = "b64")]
    pub range_end: Vec<u8>,
    #[serde(skip_serializing_if = "is_false")]
    pub serializable: bool,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct KeyValue {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(default, with = "int64")]
    pub create_revision: i64,
    #[serde(default, with = "int64")]
    pub mod_revision: i64,
    #[serde(default, with = "int64")]
    pub version: i64,
    #[serde(default, with = "b64")]
    pub value: Vec<u8>,
    #[serde(default, with = "int64")]
    pub lease: i64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct RangeResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default, with = "int64")]
    pub count: i64,
}

#[derive(Debug, Serialize)]
pub struct PutRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    #[serde(skip_serializing_if = "is_zero", with = "int64")]
    pub lease: i64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct PutResponse {
    #[serde(default)]
    pub header: ResponseHeader,
}

#[derive(Debug, Serialize)]
pub struct DeleteRangeRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, with = "int64")]
    pub deleted: i64,
}

/// `Compare` asking for a key that does not exist: `create_revision == 0`.
/// `result` EQUAL is the enum's zero value, left out like etcd does.
#[derive(Debug, Serialize)]
pub struct Compare {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    pub target: &'static str,
    #[serde(with = "int64")]
    pub create_revision: i64,
}

#[derive(Debug, Serialize)]
pub enum RequestOp {
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_range")]
    Range(RangeRequest),
}

#[derive(Debug, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    /// Each op is a one-key object (`{"request_put": {...}}`): a proto oneof.
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ResponseOp {
    pub response_range: Option<RangeResponse>,
    pub response_put: Option<PutResponse>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct TxnResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Serialize)]
pub struct LeaseGrantRequest {
    #[serde(rename = "TTL", with = "int64")]
    pub ttl: i64,
}

/// Answer of grant, keep-alive (inside `result`) and time-to-live.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct LeaseResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default, rename = "ID", with = "int64")]
    pub id: i64,
    /// Seconds left; absent (0) on keep-alive and -1 on time-to-live once
    /// the lease is gone.
    #[serde(default, rename = "TTL", with = "int64")]
    pub ttl: i64,
    #[serde(default, rename = "grantedTTL", with = "int64")]
    pub granted_ttl: i64,
    #[serde(default, with = "b64::list")]
    pub keys: Vec<Vec<u8>>,
    #[serde(default)]
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct LeaseIdRequest {
    #[serde(rename = "ID", with = "int64")]
    pub id: i64,
}

#[derive(Debug, Serialize)]
pub struct LeaseTimeToLiveRequest {
    #[serde(rename = "ID", with = "int64")]
    pub id: i64,
    pub keys: bool,
}

#[derive(Debug, Serialize)]
pub struct WatchRequest {
    pub create_request: WatchCreateRequest,
}

#[derive(Debug, Serialize)]
pub struct WatchCreateRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(skip_serializing_if = "is_zero", with = "int64")]
    pub start_revision: i64,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Default)]
pub enum EventType {
    /// The enum's zero value, so etcd leaves `type` out for puts.
    #[default]
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Event {
    #[serde(default, rename = "type")]
    pub kind: EventType,
    pub kv: KeyValue,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct WatchResponse {
    #[serde(default)]
    pub header: ResponseHeader,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default, with = "int64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One line of a streamed answer (watch, keep-alive): `{"result": ...}` or
/// `{"error": {"grpc_code": .., "message": ..}}`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct StreamLine<T> {
    pub result: Option<T>,
    pub error: Option<StreamError>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct StreamError {
    #[serde(default)]
    pub grpc_code: u32,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{from_str, json, to_value};

    // Bodies below are copied from etcd 3.4.23's answers.

    #[test]
    fn status_with_int64_strings_and_camel_case() {
        let body = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"1","raft_term":"2"},"version":"3.4.23","dbSize":"24576","leader":"3319814642761637952","raftIndex":"5","raftTerm":"2","raftAppliedIndex":"5","dbSizeInUse":"16384"}"#;
        let status: StatusResponse = from_str(body).unwrap();
        assert_eq!(status.header.cluster_id, 324952591200643719);
        assert_eq!(status.header.member_id, 3319814642761637952);
        assert_eq!(status.leader, 3319814642761637952);
        assert_eq!(status.raft_index, 5);
        assert_eq!(status.db_size, 24576);
        assert!(status.errors.is_empty());
    }

    #[test]
    fn status_without_leader() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"2","revision":"1","raft_term":"3"},"version":"3.4.23","dbSize":"24576","raftIndex":"13","raftTerm":"3","raftAppliedIndex":"13","errors":["etcdserver: no leader"],"dbSizeInUse":"16384"}"#;
        let status: StatusResponse = from_str(body).unwrap();
        assert_eq!(status.leader, 0);
        assert_eq!(status.errors, ["etcdserver: no leader"]);
    }

    #[test]
    fn member_list_ids_beyond_i64() {
        let body = r#"{"header":{"cluster_id":"129010770263230644","member_id":"7234835788977491870","raft_term":"2"},"members":[{"ID":"7234835788977491870","name":"a","peerURLs":["http://127.0.0.1:24001"],"clientURLs":["http://127.0.0.1:24101"]},{"ID":"17496614320493254894","peerURLs":["http://127.0.0.1:24002"]}]}"#;
        let list: MemberListResponse = from_str(body).unwrap();
        assert_eq!(list.header.revision, 0);
        assert_eq!(list.members[1].id, 17496614320493254894);
        assert_eq!(list.members[1].name, "");
        assert!(list.members[1].client_urls.is_empty());
        assert_eq!(list.members[0].client_urls, ["http://127.0.0.1:24101"]);
    }

    #[test]
    fn member_add_and_remove() {
        assert_eq!(
            to_value(MemberAddRequest {
                peer_urls: vec!["http://127.0.0.1:24004".into()]
            })
            .unwrap(),
            json!({"peerURLs": ["http://127.0.0.1:24004"]})
        );
        let body = r#"{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"member":{"ID":"15841121119629072854","peerURLs":["http://127.0.0.1:24004"]},"members":[{"ID":"15841121119629072854","peerURLs":["http://127.0.0.1:24004"]}]}"#;
        let added: MemberAddResponse = from_str(body).unwrap();
        assert_eq!(added.member.id, 15841121119629072854);
        assert_eq!(added.members.len(), 1);
        assert_eq!(
            to_value(MemberRemoveRequest {
                id: 17496614320493254894
            })
            .unwrap(),
            json!({"ID": "17496614320493254894"})
        );
        let removed: MemberRemoveResponse =
            from_str(r#"{"header":{"cluster_id":"1"},"members":[]}"#).unwrap();
        assert!(removed.members.is_empty());
    }

    #[test]
    fn range_requests_leave_out_zero_fields() {
        let plain = RangeRequest {
            key: b"foo".to_vec(),
            ..RangeRequest::default()
        };
        assert_eq!(to_value(plain).unwrap(), json!({"key": "Zm9v"}));
        let prefix = RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            serializable: true,
        };
        assert_eq!(
            to_value(prefix).unwrap(),
            json!({"key": "Zm9v", "range_end": "Zm9w", "serializable": true})
        );
    }

    #[test]
    fn range_response_present_and_absent() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"2","revision":"5","raft_term":"2"},"kvs":[{"key":"bGs=","create_revision":"5","mod_revision":"5","version":"1","value":"eA==","lease":"2324035877202812946"}],"count":"1"}"#;
        let range: RangeResponse = from_str(body).unwrap();
        assert_eq!(range.header.revision, 5);
        assert_eq!(range.count, 1);
        let kv = &range.kvs[0];
        assert_eq!(kv.key, b"lk");
        assert_eq!(kv.value, b"x");
        assert_eq!(kv.lease, 2324035877202812946);
        let empty: RangeResponse =
            from_str(r#"{"header":{"cluster_id":"1","revision":"1"}}"#).unwrap();
        assert!(empty.kvs.is_empty());
        assert_eq!(empty.count, 0);
    }

    #[test]
    fn put_and_delete() {
        let put = PutRequest {
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            lease: 0,
        };
        assert_eq!(
            to_value(put).unwrap(),
            json!({"key": "Zm9v", "value": "YmFy"})
        );
        let leased = PutRequest {
            key: b"foo".to_vec(),
            value: Vec::new(),
            lease: 7,
        };
        assert_eq!(
            to_value(leased).unwrap(),
            json!({"key": "Zm9v", "value": "", "lease": "7"})
        );
        let deleted: DeleteRangeResponse =
            from_str(r#"{"header":{"revision":"4"},"deleted":"1"}"#).unwrap();
        assert_eq!(deleted.deleted, 1);
        let nothing: DeleteRangeResponse = from_str(r#"{"header":{"revision":"4"}}"#).unwrap();
        assert_eq!(nothing.deleted, 0);
    }

    #[test]
    fn txn_create_request_and_both_answers() {
        let txn = TxnRequest {
            compare: vec![Compare {
                key: b"foo".to_vec(),
                target: "CREATE",
                create_revision: 0,
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"foo".to_vec(),
                value: b"baz".to_vec(),
                lease: 9,
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                key: b"foo".to_vec(),
                ..RangeRequest::default()
            })],
        };
        assert_eq!(
            to_value(txn).unwrap(),
            json!({
                "compare": [{"key": "Zm9v", "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": "Zm9v", "value": "YmF6", "lease": "9"}}],
                "failure": [{"request_range": {"key": "Zm9v"}}],
            })
        );
        let created: TxnResponse = from_str(r#"{"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}}]}"#).unwrap();
        assert!(created.succeeded);
        let exists: TxnResponse = from_str(r#"{"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}}]}"#).unwrap();
        assert!(!exists.succeeded);
        let range = exists.responses[0].response_range.as_ref().unwrap();
        assert_eq!(range.kvs[0].value, b"bar");
        assert_eq!(range.kvs[0].lease, 0);
    }

    #[test]
    fn lease_shapes() {
        assert_eq!(
            to_value(LeaseGrantRequest { ttl: 5 }).unwrap(),
            json!({"TTL": "5"})
        );
        assert_eq!(
            to_value(LeaseIdRequest { id: 7 }).unwrap(),
            json!({"ID": "7"})
        );
        assert_eq!(
            to_value(LeaseTimeToLiveRequest { id: 7, keys: true }).unwrap(),
            json!({"ID": "7", "keys": true})
        );
        let granted: LeaseResponse =
            from_str(r#"{"header":{"revision":"3"},"ID":"2324035877202812939","TTL":"5"}"#)
                .unwrap();
        assert_eq!((granted.id, granted.ttl), (2324035877202812939, 5));
        let kept: StreamLine<LeaseResponse> = from_str(
            r#"{"result":{"header":{"revision":"5"},"ID":"2324035877202812946","TTL":"30"}}"#,
        )
        .unwrap();
        assert_eq!(kept.result.unwrap().ttl, 30);
        let gone: StreamLine<LeaseResponse> =
            from_str(r#"{"result":{"header":{"revision":"6"},"ID":"2324035877202812946"}}"#)
                .unwrap();
        assert_eq!(gone.result.unwrap().ttl, 0);
        let ttl: LeaseResponse = from_str(
            r#"{"header":{"revision":"5"},"ID":"1","TTL":"29","grantedTTL":"30","keys":["bGs="]}"#,
        )
        .unwrap();
        assert_eq!((ttl.ttl, ttl.granted_ttl), (29, 30));
        assert_eq!(ttl.keys, [b"lk".to_vec()]);
        let expired: LeaseResponse =
            from_str(r#"{"header":{"revision":"6"},"ID":"1","TTL":"-1"}"#).unwrap();
        assert_eq!(expired.ttl, -1);
    }

    #[test]
    fn watch_stream_lines() {
        assert_eq!(
            to_value(WatchRequest {
                create_request: WatchCreateRequest {
                    key: b"wa".to_vec(),
                    start_revision: 7
                }
            })
            .unwrap(),
            json!({"create_request": {"key": "d2E=", "start_revision": "7"}})
        );
        let created: StreamLine<WatchResponse> =
            from_str(r#"{"result":{"header":{"revision":"6"},"created":true}}"#).unwrap();
        assert!(created.result.unwrap().created);
        let put: StreamLine<WatchResponse> = from_str(r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"d2E=","create_revision":"7","mod_revision":"7","version":"1","value":"MQ=="}}]}}"#).unwrap();
        let put = put.result.unwrap();
        assert_eq!(put.events[0].kind, EventType::Put);
        assert_eq!(put.events[0].kv.value, b"1");
        let delete: StreamLine<WatchResponse> = from_str(r#"{"result":{"header":{"revision":"8"},"events":[{"type":"DELETE","kv":{"key":"d2E=","mod_revision":"8"}}]}}"#).unwrap();
        let delete = delete.result.unwrap();
        assert_eq!(delete.events[0].kind, EventType::Delete);
        assert!(delete.events[0].kv.value.is_empty());
        let error: StreamLine<WatchResponse> = from_str(
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"no leader","http_status":"Service Unavailable"}}"#,
        )
        .unwrap();
        assert_eq!(error.error.unwrap().grpc_code, 14);
    }

    #[test]
    fn error_and_health_bodies() {
        let error: ErrorBody = from_str(r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#).unwrap();
        assert_eq!(error.code, 5);
        let healthy: HealthBody = from_str(r#"{"health":"true"}"#).unwrap();
        assert_eq!(healthy.health, "true");
        let unhealthy: HealthBody =
            from_str(r#"{"health":"false","reason":"RAFT NO LEADER"}"#).unwrap();
        assert_eq!(unhealthy.reason, "RAFT NO LEADER");
    }

    #[test]
    fn int64_accepts_numbers_and_rejects_garbage() {
        let header: ResponseHeader = from_str(r#"{"revision": 12}"#).unwrap();
        assert_eq!(header.revision, 12);
        assert!(from_str::<ResponseHeader>(r#"{"revision": "twelve"}"#).is_err());
        assert!(from_str::<KeyValue>(r#"{"key": "not base64!"}"#).is_err());
    }
}
