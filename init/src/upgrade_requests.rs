//! PID 1's side of an upgrade or rollback: starting the sequencer's thread
//! for a client, answering what the thread asks of the loop, feeding it
//! the client's bundle bytes, and carrying out the outcome.

use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bascule_api::pb;
use bascule_api::pb::response::Result as Reply;
use bascule_sequencer::journal::RunKind;
use bascule_sequencer::{
    AfterInstall, DataPolicy, Finished, Outcome, Pass, QuorumPolicy, RebootMode, Recovery, RunMode,
    Running, SystemClock, UpgradeOptions, VersionPolicy,
};
use bascule_services::Class;
use bascule_sys::epoll::Interest;
use bascule_sys::power::PowerAction;

use crate::conn::Flow;
use crate::event_loop::Init;
use crate::log;
use crate::staged::Staged;
use crate::tokens::Source as Token;
use crate::upgrade_bridge::{self, LoopCall};
use crate::upgrade_host::{MachineHost, Source, JOURNAL_FILE};
use crate::upgrades::{
    self, event_to_pb, outcome_to_pb, Feed, PendingStop, Run, RunOrigin, StopScope,
    FEED_HIGH_WATER, NO_CLIENT, STOP_DEADLINE,
};
use crate::wire;

type Answer = Result<Reply, (pb::ErrorCode, String)>;

/// The sequencer's options from the request.
fn options(r: &pb::UpgradeRequest) -> UpgradeOptions {
    UpgradeOptions {
        data: if r.preserve {
            DataPolicy::Preserve
        } else {
            DataPolicy::Wipe
        },
        after: if r.stage {
            AfterInstall::Stage
        } else {
            AfterInstall::Reboot
        },
        versions: if r.force {
            VersionPolicy::AllowAny
        } else {
            VersionPolicy::NewerOnly
        },
        quorum: if r.force {
            QuorumPolicy::Force
        } else {
            QuorumPolicy::Check
        },
        reboot: match pb::RebootMode::try_from(r.reboot_mode) {
            Ok(pb::RebootMode::Firmware) => RebootMode::Firmware,
            _ => RebootMode::Kexec,
        },
        run: if r.dry_run {
            RunMode::DryRun
        } else if r.prepare {
            RunMode::Prepare
        } else if r.apply_prepared {
            RunMode::ApplyPrepared
        } else {
            RunMode::Apply
        },
        ..UpgradeOptions::default()
    }
}

fn source(r: &pb::UpgradeRequest) -> Result<Source, String> {
    use pb::upgrade_request::Source as S;
    let modes = [
        (r.dry_run, "dry_run"),
        (r.prepare, "prepare"),
        (r.apply_prepared, "apply_prepared"),
        (r.stage, "stage"),
    ];
    let chosen: Vec<&str> = modes.iter().filter(|m| m.0).map(|m| m.1).collect();
    if chosen.len() > 1 {
        return Err(format!(
            "the upgrade request asks for {}: choose one",
            chosen.join(" and ")
        ));
    }
    if r.apply_prepared {
        return match r.source {
            None => Ok(Source::Prepared),
            Some(_) => Err(
                "apply_prepared boots the slot a prepare wrote: give no bundle (or upgrade with the same bundle instead)".into(),
            ),
        };
    }
    match &r.source {
        Some(S::Path(p)) => {
            let p = p.strip_prefix("file://").unwrap_or(p);
            if !p.starts_with('/') {
                return Err(format!("bundle path {p:?} must be absolute"));
            }
            Ok(Source::Path(PathBuf::from(p)))
        }
        Some(S::Url(u)) if u.starts_with("http://") || u.starts_with("https://") => {
            if u.starts_with("https://") {
                return Err(format!(
                    "{u}: this build fetches plain http:// only (bundles are signed, so the transport need not be trusted)"
                ));
            }
            Ok(Source::Url(u.clone()))
        }
        Some(S::Url(u)) => Err(format!("{u:?} is not an http:// URL")),
        Some(S::Stream(true)) => Ok(Source::Stream),
        _ => Err("the upgrade request names no bundle (path, url or stream)".into()),
    }
}

impl Init {
    fn running(&self) -> Running {
        Running {
            slot: self.cfg.booted_slot,
            version: self.cfg.image_version.clone().unwrap_or_default(),
        }
    }

    /// Starts an upgrade (or a rollback) on its own thread for this client.
    pub(crate) fn start_run(
        &mut self,
        tok: u64,
        id: u64,
        kind: RunKind,
        req: Option<pb::UpgradeRequest>,
    ) -> Option<Answer> {
        if self.upgrades.run.is_some() {
            return Some(Err((
                pb::ErrorCode::Unavailable,
                "another upgrade or rollback is running: follow it with `bascule upgrade status`"
                    .into(),
            )));
        }
        if self.shutting_down() {
            return Some(Err((
                pb::ErrorCode::Unavailable,
                "the machine is shutting down".into(),
            )));
        }
        let src = match req.as_ref().map(source) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => return Some(Err((pb::ErrorCode::InvalidRequest, e))),
            None => None,
        };
        let (handle, bridge) = match upgrade_bridge::bridge() {
            Ok(b) => b,
            Err(e) => return Some(Err((pb::ErrorCode::Failed, e.to_string()))),
        };
        let progress_handle = match handle.try_clone() {
            Ok(h) => h,
            Err(e) => return Some(Err((pb::ErrorCode::Failed, e.to_string()))),
        };
        if let Err(e) = self
            .epoll
            .add(&bridge.wake, Token::UpgradeBell.token(), Interest::IN)
        {
            return Some(Err((
                pb::ErrorCode::Failed,
                format!("cannot watch the upgrade: {e}"),
            )));
        }
        let mut host = MachineHost {
            bridge: handle,
            source: src.unwrap_or(Source::Stream),
            running: self.running(),
            journal_file: PathBuf::from(JOURNAL_FILE),
            cluster: Default::default(),
            cluster_target: String::new(),
        };
        let opts = req.as_ref().map(options).unwrap_or_default();
        let thread = std::thread::Builder::new()
            .name("upgrade".into())
            .spawn(move || {
                let clock = SystemClock::default();
                let mut progress = |ev| progress_handle.send(LoopCall::Event(ev));
                let finished = catch_unwind(AssertUnwindSafe(|| match kind {
                    RunKind::Upgrade => {
                        bascule_sequencer::upgrade(&mut host, &clock, &mut progress, &opts)
                    }
                    RunKind::Rollback => {
                        bascule_sequencer::rollback(&mut host, &clock, &mut progress)
                    }
                }));
                match finished {
                    Ok(f) => host.bridge.send(LoopCall::Finished(Box::new(f))),
                    // The panic hook logged it; the loop sees a thread with no outcome.
                    Err(_) => {
                        host.bridge
                            .send(LoopCall::Event(bascule_sequencer::Event::PhaseEnded {
                                phase: bascule_sequencer::Phase::Verify,
                                status: bascule_sequencer::PhaseStatus::Failed,
                                error: Some("the sequencer panicked (see the console)".into()),
                            }))
                    }
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = self.epoll.delete(&bridge.wake);
                return Some(Err((
                    pb::ErrorCode::Failed,
                    format!("cannot start the upgrade thread: {e}"),
                )));
            }
        };
        log!(
            "{}: started {}",
            match kind {
                RunKind::Upgrade => "upgrade",
                RunKind::Rollback => "rollback",
            },
            if tok == NO_CLIENT {
                "from META, staged at boot"
            } else {
                "for a client"
            }
        );
        self.upgrades.run = Some(Run {
            kind,
            origin: if tok == NO_CLIENT {
                RunOrigin::StagedAtBoot
            } else {
                RunOrigin::Client
            },
            conn: tok,
            request_id: id,
            bridge,
            thread: Some(thread),
            feed: None,
            stop: None,
            reboot: None,
            last_progress: None,
        });
        None
    }

    /// Applies a staged upgrade before any service starts: the run of
    /// `upgrade --apply`, asked for by META instead of a client. False when
    /// it could not start (the boot then goes on as usual).
    pub(crate) fn start_staged(&mut self, s: Staged) -> bool {
        log!(
            "staged upgrade to {} in slot {}: applying it before any service starts",
            s.version,
            s.slot
        );
        let req = pb::UpgradeRequest {
            apply_prepared: true,
            preserve: !s.wipe_data,
            reboot_mode: if s.firmware_reboot {
                pb::RebootMode::Firmware
            } else {
                pb::RebootMode::Kexec
            } as i32,
            ..Default::default()
        };
        match self.start_run(NO_CLIENT, 0, RunKind::Upgrade, Some(req)) {
            None => true,
            Some(Err((_, why))) => {
                log!("staged upgrade: cannot start it ({why}); booting as usual");
                false
            }
            Some(Ok(_)) => false,
        }
    }

    fn send_event(&mut self, ev: pb::UpgradeEvent, more: bool) {
        let Some(run) = &self.upgrades.run else {
            return;
        };
        // A rollback's client waits for one Rollback reply; its phases
        // still reach the journal and the init log.
        if run.kind != RunKind::Upgrade {
            return;
        }
        let (conn, id) = (run.conn, run.request_id);
        self.control.reply(
            &self.epoll,
            conn,
            &pb::Response {
                id,
                more,
                result: Some(Reply::Upgrade(ev)),
            },
        );
    }

    /// The doorbell rang: answer everything the thread asked.
    pub(crate) fn on_upgrade_bell(&mut self) {
        let calls = match &self.upgrades.run {
            Some(run) => run.bridge.drain(),
            None => return,
        };
        for call in calls {
            self.on_loop_call(call);
        }
    }

    fn on_loop_call(&mut self, call: LoopCall) {
        let now = self.now();
        match call {
            LoopCall::Event(ev) => {
                let (pbev, line) = event_to_pb(&ev);
                if let Some(line) = line {
                    log!("{line}");
                }
                let last =
                    pbev.kind != pb::UpgradeEventKind::Progress as i32 || pbev.done == pbev.total;
                if self.upgrades.progress_due(now, last) {
                    self.send_event(pbev, true);
                }
            }
            LoopCall::Journal(j) => self.upgrades.record(j),
            LoopCall::Cordon(reply) => {
                self.sup.set_cordoned(true);
                let _ = reply.send(());
            }
            LoopCall::Drain(reply) => {
                self.sup
                    .stop_class(Class::Workload, now, self.launcher.launcher());
                self.park_stop(StopScope::Workloads, reply);
            }
            LoopCall::StopAll(reply) => {
                self.sup.stop_all(now, self.launcher.launcher());
                self.park_stop(StopScope::All, reply);
            }
            LoopCall::ReadMeta(reply) => {
                let r = match self.keeper.slots() {
                    Ok(s) => Ok(s.record.clone()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
            LoopCall::WriteMeta(rec, reply) => {
                let r = match self.keeper.slots_mut() {
                    Ok(s) => s.replace_record(rec).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
            LoopCall::SetOnce(slot, reply) => {
                let r = match self.keeper.slots_mut() {
                    Ok(s) => s.loader_set_once(slot).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
            LoopCall::SetDefault(slot, reply) => {
                let r = match self.keeper.slots_mut() {
                    Ok(s) => s.loader_set_default(slot).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
            LoopCall::SendBundle(pass, reply) => {
                let _ = reply.send(self.open_feed(pass));
            }
            LoopCall::Reboot(action) => {
                if let Some(run) = &mut self.upgrades.run {
                    run.reboot = Some(action);
                }
            }
            LoopCall::Finished(f) => self.finish_run(*f),
        }
    }

    fn park_stop(
        &mut self,
        scope: StopScope,
        reply: upgrade_bridge::Reply<Result<(), Vec<String>>>,
    ) {
        let deadline = self.now() + STOP_DEADLINE;
        if let Some(run) = &mut self.upgrades.run {
            run.stop = Some(PendingStop {
                scope,
                reply,
                deadline,
            });
        }
        self.check_stop();
    }

    /// Answers a parked stop once its services are down or its time is up.
    pub(crate) fn check_stop(&mut self) {
        let now = self.now();
        let Some(run) = &mut self.upgrades.run else {
            return;
        };
        let Some(stop) = &run.stop else {
            return;
        };
        let left: Vec<String> = match stop.scope {
            StopScope::Workloads => self.sup.active_in_class(Class::Workload),
            StopScope::All => self
                .sup
                .names()
                .filter(|n| self.sup.service(n).is_some_and(|s| s.state.is_active()))
                .cloned()
                .collect(),
        };
        if left.is_empty() || now >= stop.deadline {
            if stop.scope == StopScope::All {
                // PID 1's own log files would keep /var busy at the unmount.
                self.logs.close_files();
            }
            let Some(run) = &mut self.upgrades.run else {
                return;
            };
            if let Some(stop) = run.stop.take() {
                let _ = stop
                    .reply
                    .send(if left.is_empty() { Ok(()) } else { Err(left) });
            }
        }
    }

    /// A pipe for the client's bundle bytes; asks the client to send them.
    fn open_feed(&mut self, pass: Pass) -> Result<(std::os::fd::OwnedFd, Arc<AtomicBool>), String> {
        use rustix::pipe::{pipe_with, PipeFlags};
        let (rd, wr) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        rustix::fs::fcntl_setfl(&wr, rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| format!("pipe: {e}"))?;
        // Bigger pipe, fewer wake-ups; the default still works.
        let _ = rustix::pipe::fcntl_setpipe_size(&wr, 1 << 20);
        let n = match pass {
            Pass::Verify => 1,
            Pass::Install => 2,
        };
        let complete = Arc::new(AtomicBool::new(false));
        if let Some(run) = &mut self.upgrades.run {
            if let Some(old) = run.feed.take() {
                let _ = self.epoll.delete(&old.fd);
            }
            run.feed = Some(Feed {
                pass: n,
                fd: wr,
                queue: Vec::new(),
                ended: false,
                complete: complete.clone(),
                watched: false,
            });
        }
        self.send_event(
            pb::UpgradeEvent {
                kind: pb::UpgradeEventKind::SendBundle as i32,
                phase: match pass {
                    Pass::Verify => "verify",
                    Pass::Install => "install",
                }
                .into(),
                pass: n,
                ..Default::default()
            },
            true,
        );
        Ok((rd, complete))
    }

    /// Bundle bytes from the client.
    pub(crate) fn upgrade_data(&mut self, tok: u64, d: pb::UpgradeData) {
        let Some(run) = &mut self.upgrades.run else {
            return;
        };
        if run.conn != tok || run.request_id != d.upgrade_id {
            return;
        }
        let Some(feed) = run.feed.as_mut().filter(|f| f.pass == d.pass && !f.ended) else {
            // A pass the sequencer stopped reading: nothing waits for it.
            return;
        };
        feed.queue.extend_from_slice(&d.chunk);
        feed.ended = d.end;
        self.flush_feed();
    }

    /// Moves queued bytes into the pipe; pauses or resumes the client.
    pub(crate) fn flush_feed(&mut self) {
        let Some(run) = &mut self.upgrades.run else {
            return;
        };
        let conn = run.conn;
        let Some(feed) = &mut run.feed else {
            return;
        };
        let mut broken = false;
        while !feed.queue.is_empty() {
            match rustix::io::write(&feed.fd, &feed.queue) {
                Ok(n) => {
                    feed.queue.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    // EPIPE: the sequencer stopped reading this pass.
                    broken = true;
                    break;
                }
            }
        }
        let want_watch = !broken && !feed.queue.is_empty();
        if want_watch != feed.watched {
            feed.watched = want_watch;
            if want_watch {
                let _ = self
                    .epoll
                    .add(feed.fd.as_fd(), Token::UpgradeFeed.token(), Interest::OUT);
            } else {
                let _ = self.epoll.delete(&feed.fd);
            }
        }
        let flow = if feed.queue.len() > FEED_HIGH_WATER {
            Flow::Paused
        } else {
            Flow::Reading
        };
        let done = broken || (feed.ended && feed.queue.is_empty());
        if done {
            if !broken {
                feed.complete.store(true, Ordering::Release);
            }
            // Closing the write end is the end of the pass for the reader.
            run.feed = None;
        }
        self.control
            .set_flow(&self.epoll, conn, if done { Flow::Reading } else { flow });
    }

    /// The run's client went away: a streamed pass ends there.
    pub(crate) fn upgrade_conn_dropped(&mut self, conn: u64) {
        if let Some(run) = &mut self.upgrades.run {
            if run.conn == conn {
                if let Some(feed) = run.feed.take() {
                    if feed.watched {
                        let _ = self.epoll.delete(&feed.fd);
                    }
                }
            }
        }
    }

    fn finish_run(&mut self, f: Finished) {
        let Some(mut run) = self.upgrades.run.take() else {
            return;
        };
        let _ = self.epoll.delete(&run.bridge.wake);
        if let Some(feed) = run.feed.take() {
            let _ = self.epoll.delete(&feed.fd);
        }
        if let Some(t) = run.thread.take() {
            // It sent its last word: joining does not wait.
            let _ = t.join();
        }
        self.upgrades.record(f.journal.clone());
        log!(
            "{}: {}",
            match run.kind {
                RunKind::Upgrade => "upgrade",
                RunKind::Rollback => "rollback",
            },
            f.outcome
        );
        let answer = match run.kind {
            RunKind::Upgrade => Reply::Upgrade(pb::UpgradeEvent {
                kind: pb::UpgradeEventKind::Outcome as i32,
                outcome: Some(outcome_to_pb(&f.outcome, &f.journal)),
                ..Default::default()
            }),
            RunKind::Rollback => match &f.outcome {
                Outcome::Rebooting(_) => Reply::Rollback(pb::RollbackReply {
                    slot: wire::slot(f.journal.to_slot) as i32,
                    version: f.journal.to_version.clone().unwrap_or_default(),
                }),
                other => Reply::Error(pb::Error::new(
                    match other {
                        Outcome::Refused(_) => pb::ErrorCode::Unavailable,
                        _ => pb::ErrorCode::Failed,
                    },
                    other.to_string(),
                )),
            },
        };
        self.control.reply(
            &self.epoll,
            run.conn,
            &pb::Response {
                id: run.request_id,
                more: false,
                result: Some(answer),
            },
        );
        self.control.set_flow(&self.epoll, run.conn, Flow::Reading);
        let now = self.now();
        match &f.outcome {
            Outcome::Rebooting(mode) => {
                let action = run.reboot.unwrap_or(match mode {
                    RebootMode::Kexec => PowerAction::Kexec,
                    RebootMode::Firmware => PowerAction::Reboot,
                });
                self.begin_shutdown(action);
            }
            Outcome::Aborted {
                recovery: Recovery::RebootCurrentSlot | Recovery::RebootPending,
                ..
            } => self.begin_shutdown(PowerAction::Reboot),
            Outcome::Aborted {
                recovery: Recovery::Resume,
                ..
            } => {
                self.sup.set_cordoned(false);
                self.sup.start_all(now, self.launcher.launcher());
            }
            _ => self.sup.set_cordoned(false),
        }
        // A staged run found no service running and /var unmounted: any
        // end but its own reboot is followed by an ordinary boot (its
        // request is already gone from META).
        if run.origin == RunOrigin::StagedAtBoot
            && !matches!(f.outcome, Outcome::Rebooting(_))
            && !self.shutting_down()
        {
            log!("staged upgrade did not run to its reboot: rebooting to boot as usual");
            self.begin_shutdown(PowerAction::Reboot);
        }
    }

    /// `upgrade status`: the journals, and what the boot after the last
    /// reboot made of it.
    pub(crate) fn upgrade_status(&self) -> Answer {
        let runs = self.upgrades.journals();
        let last = runs.len().saturating_sub(1);
        Ok(Reply::UpgradeStatus(pb::UpgradeStatusReply {
            runs: runs
                .iter()
                .enumerate()
                .map(|(i, j)| {
                    let after = if i == last {
                        self.after_boot(j)
                    } else {
                        String::new()
                    };
                    upgrades::run_to_pb(j, after)
                })
                .collect(),
            running: self.upgrades.run.is_some(),
        }))
    }

    fn after_boot(&self, j: &bascule_sequencer::Journal) -> String {
        use bascule_sequencer::journal::RecordedOutcome;
        if !matches!(j.outcome, Some(RecordedOutcome::Rebooting { .. }))
            || self.upgrades.run.is_some()
        {
            return String::new();
        }
        let (Ok(slots), Some(target)) = (self.keeper.slots(), j.to_slot) else {
            return String::new();
        };
        let version = j.to_version.clone().unwrap_or_default();
        if slots.booted == target {
            if slots.record.pending_slot() == Some(target) {
                format!("slot {target} ({version}) booted and is being checked")
            } else {
                format!("slot {target} ({version}) booted and was confirmed")
            }
        } else {
            match &slots.record.last_failure {
                Some(f) if f.slot().slot() == Some(target) => {
                    format!("rolled back to slot {}: {}", slots.booted, f.reason)
                }
                _ => format!("slot {} booted, not {target}", slots.booted),
            }
        }
    }
}
