//! Readers over a bundle's source that say why it stopped: a client that
//! disconnected, or an HTTP server that went away, is not a truncated
//! bundle.

use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The pipe that PID 1's loop fills with what the client streams.
/// `complete` is set by the loop when the client sent its last chunk; an
/// end of file without it means the client went away.
pub struct ClientStream {
    pipe: File,
    complete: Arc<AtomicBool>,
    read: u64,
}

impl ClientStream {
    pub fn new(pipe: File, complete: Arc<AtomicBool>) -> Self {
        ClientStream {
            pipe,
            complete,
            read: 0,
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && !self.complete.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "the client disconnected after sending {} bytes of the bundle",
                    self.read
                ),
            ));
        }
        Ok(n)
    }
}

/// An HTTP response body: any failure names the URL and how far it got.
pub struct HttpBody<R> {
    body: R,
    url: String,
    read: u64,
}

impl<R: Read> HttpBody<R> {
    pub fn new(body: R, url: &str) -> Self {
        HttpBody {
            body,
            url: url.to_owned(),
            read: 0,
        }
    }
}

impl<R: Read> Read for HttpBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.body.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "{}: the transfer broke after {} bytes: {e}",
                    self.url, self.read
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pipe_with(bytes: &[u8]) -> File {
        let (rd, wr) = rustix::pipe::pipe().unwrap();
        File::from(wr).write_all(bytes).unwrap();
        File::from(rd)
    }

    #[test]
    fn a_client_that_left_is_named_at_the_end_of_the_pipe() {
        let mut r = ClientStream::new(pipe_with(b"12345"), Arc::default());
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"12345");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert!(e.to_string().contains("after sending 5 bytes"), "{e}");
    }

    #[test]
    fn a_complete_stream_ends_normally() {
        let done = Arc::new(AtomicBool::new(true));
        let mut r = ClientStream::new(pipe_with(b"abc"), done);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
    }

    struct Dies(usize);
    impl Read for Dies {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_broken_transfer_names_the_url_and_is_not_a_truncated_bundle() {
        let mut r = HttpBody::new(Dies(7), "http://h/b.bundle");
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert!(
            e.to_string()
                .starts_with("http://h/b.bundle: the transfer broke after 7 bytes"),
            "{e}"
        );
    }
}
