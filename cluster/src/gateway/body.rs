//! Reading etcd's answers: whole bodies and the lines of a stream.

use std::io::{BufRead, Read};

use serde::de::DeserializeOwned;

use super::{wire, Error, Failure, GrpcCode};

/// The whole body, or what was read before an error. etcd ends chunked
/// error bodies with an HTTP trailer (`Grpc-Trailer-Content-Type`) that
/// ureq's chunked decoder rejects after the JSON has arrived whole.
pub(super) fn read_body(response: ureq::Response) -> Result<String, (String, std::io::Error)> {
    let mut bytes = Vec::new();
    let result = response.into_reader().read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match result {
        Ok(_) => Ok(text),
        Err(error) => Err((text, error)),
    }
}

/// Accepts a body cut short by an error if it is already a whole JSON value.
pub(super) fn complete_json(partial: String, error: &std::io::Error) -> Result<String, String> {
    if serde_json::from_str::<serde_json::Value>(&partial).is_ok() {
        Ok(partial)
    } else {
        Err(error.to_string())
    }
}

/// Reads one JSON line of a stream; None at its end.
pub(super) fn read_line<T: DeserializeOwned>(
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

pub(super) fn stream_result<T>(
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
