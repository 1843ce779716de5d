//! Log capture: a bounded in-memory ring per service and, once a writable
//! directory is known, a size-rotated file per service.
//!
//! The ring stores what each read returned as one entry (complete lines
//! only), not one allocation per line, so capture keeps up with a service
//! writing hundreds of MB/s.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes a line costs in a reply beyond its text (timestamp, stream, tags):
/// an upper bound used to keep replies under the frame limit.
pub const LINE_OVERHEAD: usize = 16;

/// Longest line kept whole; longer output is split.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// Every stream, for exhaustive checks of mappings.
    pub const ALL: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One captured line, as read back from the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Wall-clock capture time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub stream: Stream,
    /// The line without its newline; not necessarily UTF-8.
    pub text: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    timestamp_us: u64,
    stream: Stream,
    /// One or more complete lines, each ending in '\n'.
    bytes: Vec<u8>,
    /// How many lines `bytes` holds.
    lines: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub max_bytes: u64,
    /// Rotated files kept: NAME.log.1 .. NAME.log.KEEP.
    pub keep: u32,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            max_bytes: 4 << 20,
            keep: 3,
        }
    }
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    policy: RotationPolicy,
}

impl LogFile {
    fn open(path: PathBuf, policy: RotationPolicy) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file,
            size,
            policy,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.policy.max_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(bytes) {
            // Part of it may be in: the size is what the file holds.
            self.size = self.file.metadata().map_or(self.size, |m| m.len());
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..self.policy.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        if self.policy.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The captured output of one service.
#[derive(Debug)]
pub struct LogRing {
    entries: VecDeque<Entry>,
    bytes: usize,
    capacity: usize,
    next_seq: u64,
    partial: [Vec<u8>; 2],
    file: Option<LogFile>,
    /// What the file missed since a write failed (a full disk): each new
    /// line tries again, and the first that gets in is preceded by a note
    /// of the loss.
    lost: Option<Lost>,
    /// A change in the file's health to report once: a write failed, or
    /// writing resumed.
    pub file_error: Option<String>,
}

#[derive(Debug)]
struct Lost {
    lines: u64,
    bytes: u64,
    error: String,
    /// The file size when the first write failed: more means a torn line.
    size_then: u64,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        LogRing {
            entries: VecDeque::new(),
            bytes: 0,
            capacity,
            next_seq: 0,
            partial: [Vec::new(), Vec::new()],
            file: None,
            lost: None,
            file_error: None,
        }
    }

    /// Starts writing to `dir/NAME.log`, first the lines already in memory.
    pub fn attach_file(
        &mut self,
        dir: &Path,
        name: &str,
        policy: RotationPolicy,
    ) -> Result<(), String> {
        let path = dir.join(format!("{name}.log"));
        let mut file = LogFile::open(path.clone(), policy)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        for e in &self.entries {
            file.write(&e.bytes)
                .map_err(|err| format!("cannot write log file {}: {err}", path.display()))?;
        }
        self.file = Some(file);
        self.file_error = None;
        Ok(())
    }

    /// Stops writing the file (closing it), e.g. before unmounting its filesystem.
    pub fn detach_file(&mut self) {
        self.file = None;
    }

    /// Adds what one read returned. Returns false when nothing complete
    /// was added (only a partial line).
    pub fn push(&mut self, stream: Stream, timestamp_us: u64, data: &[u8]) -> bool {
        let partial = &mut self.partial[stream.index()];
        let mut complete = match data.iter().rposition(|b| *b == b'\n') {
            Some(last) => {
                let mut out = std::mem::take(partial);
                out.extend_from_slice(&data[..=last]);
                partial.extend_from_slice(&data[last + 1..]);
                out
            }
            None => {
                partial.extend_from_slice(data);
                Vec::new()
            }
        };
        if partial.len() >= MAX_LINE {
            complete.append(partial);
            complete.push(b'\n');
        }
        if complete.is_empty() {
            return false;
        }
        self.store(stream, timestamp_us, complete);
        true
    }

    /// Flushes partial lines (the service exited).
    pub fn flush_partial(&mut self, timestamp_us: u64) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.flush_stream(stream, timestamp_us);
        }
    }

    /// Flushes one stream's unfinished line (its pipe reached EOF), so a
    /// restarted process's output is not glued onto it.
    pub fn flush_stream(&mut self, stream: Stream, timestamp_us: u64) {
        let p = &mut self.partial[stream.index()];
        if !p.is_empty() {
            let mut line = std::mem::take(p);
            line.push(b'\n');
            self.store(stream, timestamp_us, line);
        }
    }

    fn store(&mut self, stream: Stream, timestamp_us: u64, bytes: Vec<u8>) {
        self.write_file(&bytes);
        self.bytes += bytes.len();
        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        self.entries.push_back(Entry {
            seq: self.next_seq,
            timestamp_us,
            stream,
            bytes,
            lines,
        });
        self.next_seq += 1;
        while self.bytes > self.capacity && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
    }

    /// Writes `bytes` to the file, or counts them lost while it fails.
    fn write_file(&mut self, bytes: &[u8]) {
        let Some(f) = &mut self.file else {
            return;
        };
        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        let before = f.size;
        let result = match &self.lost {
            None => f.write(bytes),
            Some(lost) => {
                let torn = if f.size > lost.size_then { "\n" } else { "" };
                let note = format!(
                    "{torn}[bascule] {} lines ({} bytes) are missing here: {}\n",
                    lost.lines, lost.bytes, lost.error
                );
                f.write(note.as_bytes()).and_then(|()| f.write(bytes))
            }
        };
        match (result, self.lost.take()) {
            (Ok(()), None) => {}
            (Ok(()), Some(lost)) => {
                self.file_error = Some(format!(
                    "log file {}: writing again; {} lines ({} bytes) were lost",
                    f.path.display(),
                    lost.lines,
                    lost.bytes
                ));
            }
            (Err(e), None) => {
                self.file_error = Some(format!(
                    "cannot write log file {}: {e}; the lines stay in memory, and writing resumes when it can",
                    f.path.display()
                ));
                self.lost = Some(Lost {
                    lines,
                    bytes: bytes.len() as u64,
                    error: e.to_string(),
                    size_then: before,
                });
            }
            (Err(_), Some(mut lost)) => {
                lost.lines += lines;
                lost.bytes += bytes.len() as u64;
                self.lost = Some(lost);
            }
        }
    }

    /// Sequence number the next entry will get: a follower's cursor.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last `n` lines, and the cursor to follow from.
    pub fn tail(&self, n: usize) -> (Vec<LogLine>, u64) {
        let mut out: Vec<LogLine> = Vec::new();
        for e in self.entries.iter().rev() {
            if out.len() >= n {
                break;
            }
            let lines: Vec<&[u8]> = e.bytes.split_inclusive(|b| *b == b'\n').collect();
            for l in lines.into_iter().rev() {
                if out.len() >= n {
                    break;
                }
                out.push(line(e, l));
            }
        }
        out.reverse();
        (out, self.next_seq)
    }

    /// Lines from entries at or after `cursor`; returns the new cursor and
    /// how many entries were lost to ring eviction since the cursor.
    pub fn since(&self, cursor: u64, max_bytes: usize) -> (Vec<LogLine>, u64, u64) {
        let first = self.entries.front().map(|e| e.seq).unwrap_or(self.next_seq);
        let lost = first.saturating_sub(cursor);
        let mut out = Vec::new();
        let mut size = 0usize;
        let start = cursor.max(first);
        let mut next = start;
        for e in self.entries.iter().filter(|e| e.seq >= start) {
            let encoded = e.bytes.len() + e.lines as usize * LINE_OVERHEAD;
            if size > 0 && size + encoded > max_bytes {
                break;
            }
            size += encoded;
            out.extend(e.bytes.split_inclusive(|b| *b == b'\n').map(|l| line(e, l)));
            next = e.seq + 1;
        }
        (out, next, lost)
    }
}

impl LogRing {
    /// Moves a follower's `cursor` to the end without copying anything:
    /// the new cursor, and the lines passed over (those still in the ring
    /// and the entries evicted since the cursor). For a follower that does
    /// not read, whose lines are dropped anyway.
    pub fn skip_to_end(&self, cursor: u64) -> (u64, u64) {
        let first = self.entries.front().map(|e| e.seq).unwrap_or(self.next_seq);
        let evicted = first.saturating_sub(cursor);
        let start = cursor.max(first);
        let skipped: u64 = self
            .entries
            .iter()
            .filter(|e| e.seq >= start)
            .map(|e| e.lines)
            .sum();
        (self.next_seq, evicted + skipped)
    }
}

fn line(e: &Entry, l: &[u8]) -> LogLine {
    LogLine {
        timestamp_us: e.timestamp_us,
        stream: e.stream,
        text: l.strip_suffix(b"\n").unwrap_or(l).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn assembles_lines_across_reads() {
        let mut r = LogRing::new(1 << 20);
        assert!(!r.push(Stream::Stdout, 1, b"hel"));
        assert!(r.push(Stream::Stdout, 2, b"lo\nwor"));
        assert!(r.push(Stream::Stdout, 3, b"ld\n"));
        r.push(Stream::Stderr, 4, b"err\n");
        assert_eq!(texts(&r.tail(10).0), vec!["hello", "world", "err"]);
        assert_eq!(r.tail(10).0[2].stream, Stream::Stderr);
        assert_eq!(texts(&r.tail(2).0), vec!["world", "err"]);
    }

    #[test]
    fn ring_is_bounded_and_followers_see_the_loss() {
        let mut r = LogRing::new(100);
        for i in 0..50 {
            r.push(Stream::Stdout, i, format!("line {i:04}\n").as_bytes());
        }
        assert!(r.bytes <= 100);
        let (lines, next, lost) = r.since(0, usize::MAX);
        assert!(lost > 0);
        assert_eq!(texts(&lines).last().unwrap(), "line 0049");
        assert_eq!(next, r.next_seq());
        let (none, _, lost) = r.since(next, usize::MAX);
        assert!(none.is_empty() && lost == 0);
    }

    #[test]
    fn skipping_to_the_end_counts_lines_and_copies_nothing() {
        let mut r = LogRing::new(1 << 20);
        r.push(Stream::Stdout, 0, b"a\nb\n");
        let cursor = r.next_seq();
        r.push(Stream::Stdout, 0, b"c\nd\ne\n");
        r.push(Stream::Stderr, 0, b"f\n");
        assert_eq!(r.skip_to_end(cursor), (r.next_seq(), 4));
        assert_eq!(r.skip_to_end(r.next_seq()), (r.next_seq(), 0));
    }

    #[test]
    fn very_long_line_is_split() {
        let mut r = LogRing::new(1 << 20);
        r.push(Stream::Stdout, 0, &vec![b'x'; MAX_LINE + 10]);
        let (lines, _) = r.tail(10);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), MAX_LINE + 10);
    }

    #[test]
    fn partial_line_is_flushed_on_exit() {
        let mut r = LogRing::new(1 << 20);
        r.push(Stream::Stdout, 0, b"no newline");
        assert!(r.tail(10).0.is_empty());
        r.flush_partial(1);
        assert_eq!(texts(&r.tail(10).0), vec!["no newline"]);
    }

    #[test]
    fn file_gets_backlog_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LogRing::new(1 << 20);
        r.push(Stream::Stdout, 0, b"before attach\n");
        r.attach_file(
            dir.path(),
            "svc",
            RotationPolicy {
                max_bytes: 64,
                keep: 2,
            },
        )
        .unwrap();
        for i in 0..20 {
            r.push(
                Stream::Stdout,
                0,
                format!("line number {i:03}\n").as_bytes(),
            );
        }
        let cur = std::fs::read_to_string(dir.path().join("svc.log")).unwrap();
        let one = std::fs::read_to_string(dir.path().join("svc.log.1")).unwrap();
        assert!(cur.len() <= 64 && one.len() <= 64);
        assert!(cur.ends_with("line number 019\n"), "{cur}");
        assert!(dir.path().join("svc.log.2").exists());
        assert!(!dir.path().join("svc.log.3").exists());
    }

    #[test]
    fn a_full_disk_costs_lines_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LogRing::new(1 << 20);
        r.attach_file(dir.path(), "svc", RotationPolicy::default())
            .unwrap();
        r.push(Stream::Stdout, 0, b"one\n");
        // /dev/full answers every write with ENOSPC.
        let real = std::mem::replace(
            &mut r.file.as_mut().unwrap().file,
            OpenOptions::new().write(true).open("/dev/full").unwrap(),
        );
        r.push(Stream::Stdout, 0, b"two\n");
        r.push(Stream::Stdout, 0, b"three\nfour\n");
        let e = r.file_error.take().expect("the failure is reported");
        assert!(e.contains("No space left on device"), "{e}");
        assert!(r.file_error.is_none(), "once");
        r.file.as_mut().unwrap().file = real;
        r.push(Stream::Stdout, 0, b"five\n");
        let text = std::fs::read_to_string(dir.path().join("svc.log")).unwrap();
        assert_eq!(
            text,
            "one\n[bascule] 3 lines (15 bytes) are missing here: No space left on device (os error 28)\nfive\n"
        );
        let e = r.file_error.take().expect("the recovery is reported");
        assert!(
            e.contains("writing again; 3 lines (15 bytes) were lost"),
            "{e}"
        );
        // Every line is still in memory.
        assert_eq!(
            texts(&r.tail(10).0),
            ["one", "two", "three", "four", "five"]
        );
    }

    #[test]
    fn unwritable_dir_is_reported() {
        let mut r = LogRing::new(1024);
        let err = r
            .attach_file(
                Path::new("/nonexistent/dir"),
                "svc",
                RotationPolicy::default(),
            )
            .unwrap_err();
        assert!(err.contains("/nonexistent/dir/svc.log"), "{err}");
    }
}
