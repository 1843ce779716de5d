//! Fuzz body (`fuzz/fuzz_targets/bundle.rs`), also a property test: the
//! streaming reader over any bytes.

use std::io::Read;

use crate::{BundleReader, Trust};

/// Opens `data` as a bundle (trusting the key it names: the signature is
/// still checked) and reads every payload to its end. Any damage is an
/// error; nothing panics, and no payload yields more bytes than its
/// manifest declares.
pub fn bundle(data: &[u8]) {
    let Ok(mut r) = BundleReader::open_with(data, Trust::EmbeddedKeyForInspection) else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    loop {
        let mut p = match r.next_payload() {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return,
        };
        let size = p.info().size;
        let mut got = 0u64;
        loop {
            match p.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got += n as u64;
                    assert!(got <= size, "a payload gave more than its size");
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{BundleWriter, PayloadKind};
    use ed25519_dalek::SigningKey;

    #[test]
    fn the_reader_holds_for_generated_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BundleWriter::new("2.0.0").unwrap();
        for (i, kind) in PayloadKind::ALL.into_iter().enumerate() {
            let p = dir.path().join(kind.name());
            std::fs::write(&p, vec![i as u8 + 1; 300 * (i + 1)]).unwrap();
            w.payload(kind, &p).unwrap();
        }
        let mut bytes = Vec::new();
        w.write(&mut bytes, &SigningKey::from_bytes(&[5; 32]))
            .unwrap();
        super::bundle(&bytes);
        for case in bascule_testgen::cases(&[&bytes], 200, 7) {
            super::bundle(&case);
        }
    }
}
