//! Fuzz bodies (`fuzz/fuzz_targets/`) of the formats other tools write,
//! also run as property tests: each must hold for any input.

use crate::bls::BlsEntry;
use crate::grubenv::{GrubEnv, BLOCK_SIZE};

/// A grubenv block: parses or is refused; what parses writes back to a
/// block that parses to the same variables.
pub fn grubenv(data: &[u8]) {
    if let Ok(env) = GrubEnv::parse(data) {
        if let Ok(block) = env.to_block() {
            assert_eq!(block.len(), BLOCK_SIZE);
            let again = GrubEnv::parse(&block).expect("a written block parses");
            assert_eq!(again, env);
        }
    }
}

/// A BLS entry file: parses or is refused; what parses and can be
/// written parses back the same.
pub fn bls_entry(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entry) = BlsEntry::parse("fuzz.conf", text) {
        if let Ok(conf) = entry.to_conf("fuzz.conf") {
            assert_eq!(BlsEntry::parse("fuzz.conf", &conf).ok(), Some(entry));
        }
    }
}

/// One META copy region: decodes or names the problem; never panics.
pub fn meta_copy(data: &[u8]) {
    let _ = crate::meta::decode_copy(data);
}

/// Bytes kept of each end of the disk: the primary table (MBR, header,
/// 32 sectors of entries) and the backup (entries, header).
pub const GPT_HEAD: usize = 34 * 512;
pub const GPT_TAIL: usize = 33 * 512;

/// A disk of the image's size whose two ends are `data` (the first
/// [`GPT_HEAD`] bytes, then the last [`GPT_TAIL`]) and whose middle is
/// zeros: the GPT reader checks both copies and either reports them or
/// refuses, whatever the bytes.
pub fn gpt(data: &[u8]) {
    let (head, tail) = data.split_at(data.len().min(GPT_HEAD));
    let mut disk = Ends {
        head: head.to_vec(),
        tail: tail.to_vec(),
        total: crate::layout::DISK_SIZE,
        pos: 0,
    };
    let _ = crate::gpt::Gpt::read(&mut disk, crate::layout::DISK_SIZE);
}

/// A sparse disk holding only its two ends (reads and writes elsewhere
/// see and drop zeros).
pub struct Ends {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub total: u64,
    pub pos: u64,
}

impl Ends {
    /// Where `pos` falls: in the head, in the tail, or nowhere kept.
    fn locate(&mut self, pos: u64) -> Option<(&mut Vec<u8>, usize)> {
        let tail_start = self.total.saturating_sub(GPT_TAIL as u64);
        if pos < GPT_HEAD as u64 {
            Some((&mut self.head, pos as usize))
        } else if pos >= tail_start {
            Some((&mut self.tail, (pos - tail_start) as usize))
        } else {
            None
        }
    }
}

impl std::io::Read for Ends {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.pos;
        let n = buf.len().min(self.total.saturating_sub(pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = match self.locate(pos + i as u64) {
                Some((v, at)) => v.get(at).copied().unwrap_or(0),
                None => 0,
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Write for Ends {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let pos = self.pos;
        for (i, b) in buf.iter().enumerate() {
            if let Some((v, at)) = self.locate(pos + i as u64) {
                if v.len() <= at {
                    v.resize(at + 1, 0);
                }
                v[at] = *b;
            }
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Ends {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            std::io::SeekFrom::Start(p) => p,
            std::io::SeekFrom::End(d) => self.total.saturating_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_record::MetaRecord;
    use crate::Slot;

    #[test]
    fn grubenv_holds_for_generated_input() {
        let mut env = GrubEnv::new();
        env.set("saved_entry", "bascule-a").unwrap();
        env.set("next_entry", "bascule-b").unwrap();
        let block = env.to_block().unwrap();
        for case in bascule_testgen::cases(&[&block], 2000, 3) {
            grubenv(&case);
        }
    }

    #[test]
    fn bls_entry_holds_for_generated_input() {
        let seed = "title Bascule A\nversion 1.0.0\nsort-key bascule\nlinux /bascule/A/vmlinuz\ninitrd /bascule/A/initrd\noptions console=ttyS0 bascule.slot=A\n";
        for case in bascule_testgen::cases(&[seed.as_bytes()], 3000, 4) {
            bls_entry(&case);
        }
    }

    #[test]
    fn meta_copy_holds_for_generated_input() {
        let copy = crate::meta::encode_copy(&MetaRecord::fresh(Slot::A, "1.0.0"), 3);
        for case in bascule_testgen::cases(&[&copy], 3000, 5) {
            meta_copy(&case);
        }
    }

    #[test]
    fn gpt_holds_for_generated_input() {
        let total = crate::layout::DISK_SIZE;
        let g = crate::gpt::layout_with_random_guids(total).unwrap();
        let mut disk = Ends {
            head: vec![0; GPT_HEAD],
            tail: vec![0; GPT_TAIL],
            total,
            pos: 0,
        };
        g.write(&mut disk).unwrap();
        let mut seed = disk.head.clone();
        seed.resize(GPT_HEAD, 0);
        seed.extend_from_slice(&disk.tail);
        // The seed itself reads back as a valid table.
        let mut back = Ends { pos: 0, ..disk };
        let report = crate::gpt::Gpt::read(&mut back, total).unwrap();
        assert!(report.fully_valid());
        for case in bascule_testgen::cases(&[&seed], 400, 6) {
            gpt(&case);
        }
    }
}
