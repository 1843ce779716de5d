//! Fuzz bodies (`fuzz/fuzz_targets/`), also run as property tests: each
//! must hold for any input.

use crate::frame::FrameDecoder;
use crate::pb;

/// The frame decoder as a server uses it: `data` arrives in pieces (the
/// first byte sets their size), with session markers watched; every
/// complete frame is decoded as a `Request`. Never panics, never holds more
/// than what arrived, and a frame over the limit is an error, not a
/// buffer.
pub fn frame_decoder(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut d = FrameDecoder::new();
    let mut fed = 0usize;
    for chunk in rest.chunks(step) {
        d.push_watching_sessions(chunk);
        fed += chunk.len();
        loop {
            match d.next_frame() {
                Ok(Some(payload)) => {
                    let _ = crate::frame::decode::<pb::Request>(&payload, "Request");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(d.buffered() <= fed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn frame_decoder_holds_for_generated_input() {
        let req = pb::Request {
            id: 7,
            call: Some(pb::request::Call::ServiceList(
                pb::ServiceListRequest::default(),
            )),
        };
        let mut frame = (req.encoded_len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&req.encode_to_vec());
        let mut with_marker = vec![3u8];
        with_marker.extend_from_slice(&crate::frame::SESSION_START);
        with_marker.extend_from_slice(&frame);
        let mut plain = vec![1u8];
        plain.extend_from_slice(&frame);
        for case in bascule_testgen::cases(&[&with_marker, &plain], 3000, 1) {
            frame_decoder(&case);
        }
    }
}
