//! The upgrade call: one request, a stream of events back, and, when the
//! server asks for it (SEND_BUNDLE), the bundle streamed as UpgradeData
//! frames. The server stops reading while its install is behind, so writing
//! must never stop us reading: a writer thread streams the bundle on a clone
//! of the socket while this thread reads events.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Client, ClientError};
use crate::frame;
use crate::pb::{self, request::Call, response::Result as Reply};

/// Bundle bytes per UpgradeData frame: the protocol's limit (512 KiB), which
/// keeps every frame well under MAX_FRAME_LEN.
pub const UPGRADE_CHUNK: usize = 512 * 1024;

/// How often a writer blocked by a full socket checks whether it should give
/// up (the upgrade ended while the server was not reading).
const WRITE_TICK: Duration = Duration::from_millis(200);

/// How long a cancelled writer may take to finish the frame it began.
const FINISH_FRAME: Duration = Duration::from_secs(5);

/// A bundle the client streams: read from the start once per pass.
pub trait BundleReader: Read + Seek + Send {}
impl<T: Read + Seek + Send> BundleReader for T {}

/// Where the machine gets the bundle from.
pub enum UpgradeSource {
    /// A file already on the machine (absolute path, or file:///path).
    MachinePath(String),
    /// An http:// or https:// URL the machine fetches itself.
    Url(String),
    /// Bytes on the client's side, streamed when the server asks.
    Stream(Box<dyn BundleReader>),
    /// No bundle: boot the slot an earlier `prepare` wrote.
    Prepared,
}

impl std::fmt::Debug for UpgradeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeSource::MachinePath(p) => f.debug_tuple("MachinePath").field(p).finish(),
            UpgradeSource::Url(u) => f.debug_tuple("Url").field(u).finish(),
            UpgradeSource::Stream(_) => f.write_str("Stream(..)"),
            UpgradeSource::Prepared => f.write_str("Prepared"),
        }
    }
}

/// The options of an UpgradeRequest besides its source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpgradeOptions {
    pub preserve: bool,
    pub stage: bool,
    pub force: bool,
    pub reboot_mode: pb::RebootMode,
    pub dry_run: bool,
    /// Verify and write the inactive slot, stop nothing, reboot never.
    pub prepare: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The server answered the upgrade with an error (e.g. another upgrade
    /// is running), before or instead of an outcome.
    #[error("{0}")]
    Rejected(pb::Error),
    #[error("the connection broke {}before the upgrade's outcome ({source}); the machine may be rebooting: ask for the upgrade status once it answers", phase_note(.last_phase))]
    Interrupted {
        last_phase: Option<String>,
        #[source]
        source: ClientError,
    },
    #[error("cannot read the local bundle (pass {pass}): {source}; the upgrade was abandoned")]
    Bundle {
        pass: u32,
        #[source]
        source: io::Error,
    },
    #[error("the server asked for the bundle to be streamed, but this upgrade names a path or URL on the machine")]
    UnaskedSendBundle,
    #[error("the server ended the upgrade stream without an outcome")]
    NoOutcome,
    #[error("the server sent a reply that is not an upgrade event")]
    Unexpected,
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn phase_note(phase: &Option<String>) -> String {
    match phase {
        Some(p) => format!("in phase {p} "),
        None => String::new(),
    }
}

impl UpgradeSource {
    fn split(
        self,
    ) -> (
        Option<pb::upgrade_request::Source>,
        Option<Box<dyn BundleReader>>,
    ) {
        use pb::upgrade_request::Source;
        match self {
            UpgradeSource::MachinePath(p) => (Some(Source::Path(p)), None),
            UpgradeSource::Url(u) => (Some(Source::Url(u)), None),
            UpgradeSource::Stream(r) => (Some(Source::Stream(true)), Some(r)),
            UpgradeSource::Prepared => (None, None),
        }
    }
}

impl Client {
    /// Runs an upgrade: hands every event (the outcome included) to
    /// `on_event` and returns the outcome. `idle` bounds the wait between
    /// events; `None` waits as long as the connection stays open, since
    /// phases such as drain may take minutes.
    pub fn upgrade(
        &mut self,
        source: UpgradeSource,
        options: UpgradeOptions,
        idle: Option<Duration>,
        mut on_event: impl FnMut(&pb::UpgradeEvent),
    ) -> Result<pb::UpgradeOutcome, UpgradeError> {
        let (source, bundle) = source.split();
        let request = pb::UpgradeRequest {
            apply_prepared: source.is_none(),
            source,
            preserve: options.preserve,
            stage: options.stage,
            force: options.force,
            reboot_mode: options.reboot_mode as i32,
            dry_run: options.dry_run,
            prepare: options.prepare,
        };
        // Cloned before sending: a failure to clone must not leave the
        // server waiting for a bundle nobody sends.
        let writer_stream = match bundle {
            Some(_) => Some(self.stream.try_clone().map_err(ClientError::from)?),
            None => None,
        };
        let id = self.send_or_explain(Call::Upgrade(request))?;
        let cancel = AtomicBool::new(false);
        let result = thread::scope(|scope| {
            let (passes, asked) = mpsc::channel::<u32>();
            let writer = match (bundle, writer_stream) {
                (Some(bundle), Some(stream)) => {
                    let cancel = &cancel;
                    Some(
                        scope.spawn(move || BundleWriter { stream, id, cancel }.run(bundle, asked)),
                    )
                }
                _ => None,
            };
            let events = self.read_events(id, idle, writer.is_some(), &passes, &mut on_event);
            // Whatever pass is still being written is of no use now.
            cancel.store(true, Ordering::Relaxed);
            drop(passes);
            let written = match writer.map(|w| w.join()) {
                Some(Ok(r)) => r,
                Some(Err(_)) => Err(UpgradeError::Bundle {
                    pass: 0,
                    source: io::Error::other("the thread streaming the bundle panicked"),
                }),
                None => Ok(()),
            };
            match (events, written) {
                (Ok(outcome), _) => Ok(outcome),
                // The writer shut the socket down to wake us: its error is the cause.
                (Err(_), Err(e @ UpgradeError::Bundle { .. })) => Err(e),
                (Err(e), _) => Err(e),
            }
        });
        // The writer's tick must not linger as our write timeout.
        self.stream
            .set_write_timeout(Some(self.timeout))
            .map_err(ClientError::from)?;
        result
    }

    fn read_events(
        &mut self,
        id: u64,
        idle: Option<Duration>,
        streaming: bool,
        passes: &mpsc::Sender<u32>,
        on_event: &mut impl FnMut(&pb::UpgradeEvent),
    ) -> Result<pb::UpgradeOutcome, UpgradeError> {
        let mut last_phase: Option<String> = None;
        loop {
            let resp = self
                .recv_for(id, idle)
                .map_err(|source| UpgradeError::Interrupted {
                    last_phase: last_phase.clone(),
                    source,
                })?;
            let event = match resp.result {
                Some(Reply::Error(e)) if resp.id == id => return Err(UpgradeError::Rejected(e)),
                // id 0: about the connection itself (a bad frame of ours).
                Some(Reply::Error(e)) => return Err(ClientError::Server(e).into()),
                Some(Reply::Upgrade(event)) if resp.id == id => event,
                _ => return Err(UpgradeError::Unexpected),
            };
            if !event.phase.is_empty() {
                last_phase = Some(event.phase.clone());
            }
            match event.kind() {
                pb::UpgradeEventKind::SendBundle => {
                    if !streaming {
                        return Err(UpgradeError::UnaskedSendBundle);
                    }
                    // A closed channel means the writer already failed; its
                    // error surfaces once the stream ends.
                    let _ = passes.send(event.pass);
                }
                pb::UpgradeEventKind::Outcome => {
                    on_event(&event);
                    return event.outcome.ok_or(UpgradeError::NoOutcome);
                }
                _ => {}
            }
            on_event(&event);
            if !resp.more {
                return Err(UpgradeError::NoOutcome);
            }
        }
    }
}

/// Streams the bundle once per pass the server asks for.
struct BundleWriter<'a> {
    stream: UnixStream,
    id: u64,
    cancel: &'a AtomicBool,
}

/// Why a pass stopped early.
enum Stop {
    /// The upgrade ended (or the connection did): not an error of ours.
    Cancelled,
    Read(io::Error),
}

impl BundleWriter<'_> {
    fn run(
        self,
        mut bundle: Box<dyn BundleReader>,
        asked: mpsc::Receiver<u32>,
    ) -> Result<(), UpgradeError> {
        // A blocked write wakes up every tick to check `cancel`.
        if self.stream.set_write_timeout(Some(WRITE_TICK)).is_err() {
            return Ok(());
        }
        while let Ok(pass) = asked.recv() {
            match self.pass(&mut *bundle, pass) {
                Ok(()) => {}
                Err(Stop::Cancelled) => return Ok(()),
                Err(Stop::Read(source)) => {
                    // Wake the reader, which is waiting for events the
                    // server will not send while it waits for our bytes.
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return Err(UpgradeError::Bundle { pass, source });
                }
            }
        }
        Ok(())
    }

    fn pass(&self, bundle: &mut dyn BundleReader, pass: u32) -> Result<(), Stop> {
        bundle.seek(SeekFrom::Start(0)).map_err(Stop::Read)?;
        // One chunk read ahead, so the last data frame carries `end` (an
        // empty bundle is a single empty frame with `end`).
        let mut current = read_chunk(bundle)?;
        loop {
            let next = if current.is_empty() {
                Vec::new()
            } else {
                read_chunk(bundle)?
            };
            let end = next.is_empty();
            let request = pb::Request {
                id: self.id,
                call: Some(Call::UpgradeData(pb::UpgradeData {
                    upgrade_id: self.id,
                    pass,
                    chunk: current,
                    end,
                })),
            };
            // A chunk of UPGRADE_CHUNK is far below the frame limit.
            let bytes = frame::encode(&request)
                .map_err(|e| Stop::Read(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            self.write_all(&bytes)?;
            if end {
                return Ok(());
            }
            current = next;
        }
    }

    /// write_all that gives up when cancelled, but only between frames: a
    /// frame cut short would leave the rest of the byte stream unframed,
    /// and on the virtio-serial port the next client shares that stream.
    /// After a cancel, the frame begun is finished within
    /// [`FINISH_FRAME`] (the server goes on reading and drops it).
    fn write_all(&self, mut bytes: &[u8]) -> Result<(), Stop> {
        let mut cancelled_at: Option<Instant> = None;
        let mut started = false;
        while !bytes.is_empty() {
            if self.cancel.load(Ordering::Relaxed) {
                if !started {
                    return Err(Stop::Cancelled);
                }
                let at = *cancelled_at.get_or_insert_with(Instant::now);
                if at.elapsed() > FINISH_FRAME {
                    return Err(Stop::Cancelled);
                }
            }
            match (&self.stream).write(bytes) {
                Ok(0) => return Err(Stop::Cancelled),
                Ok(n) => {
                    started = true;
                    bytes = &bytes[n..];
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // The server closed: the reader sees it too and reports it.
                Err(_) => return Err(Stop::Cancelled),
            }
        }
        Ok(())
    }
}

/// Up to UPGRADE_CHUNK bytes; fewer only at the end of the bundle.
fn read_chunk(bundle: &mut dyn BundleReader) -> Result<Vec<u8>, Stop> {
    let mut buf = vec![0u8; UPGRADE_CHUNK];
    let mut len = 0;
    while len < buf.len() {
        match bundle.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Stop::Read(e)),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
