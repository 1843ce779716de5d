//! What each control request means: the calls of the API answered from
//! PID 1's parts. Replies that depend on a service settling (start, stop,
//! restart) are parked as waiters and sent when it has.

use bascule_api::pb;
use bascule_api::pb::request::Call;
use bascule_api::pb::response::Result as Reply;
use bascule_services::ControlError;

use crate::wire;
use bascule_sys::power::PowerAction;

use crate::control::error_response;
use crate::event_loop::Init;
use crate::waiters::{Outcome, WaitFor, Waiter, CONTROL_WAIT};

/// Longest reply chunk of log lines.
const LOG_CHUNK_BYTES: usize = 256 * 1024;

impl Init {
    pub(crate) fn handle_request(&mut self, tok: u64, req: pb::Request) {
        let id = req.id;
        let reply = match req.call {
            None => Err((
                pb::ErrorCode::InvalidRequest,
                format!(
                    "request {id} names no call (or one this server does not know: version {})",
                    bascule_api::VERSION
                ),
            )),
            Some(Call::Version(_)) => Ok(Reply::Version(pb::VersionReply {
                version: bascule_api::VERSION.to_owned(),
                git_commit: option_env!("BASCULE_GIT_COMMIT").unwrap_or("").to_owned(),
                mode: wire::run_mode(self.cfg.mode) as i32,
                booted_slot: wire::slot(self.cfg.booted_slot) as i32,
                image_version: self.cfg.image_version.clone().unwrap_or_default(),
                boot_id: crate::config::read_trimmed("/proc/sys/kernel/random/boot_id")
                    .unwrap_or_default(),
                cluster_role: wire::cluster_role(crate::cluster_boot::machine()) as i32,
                node_name: crate::cluster_boot::machine()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
            })),
            Some(
                call @ (Call::ClusterStatus(_)
                | Call::ClusterSetDesired(_)
                | Call::ClusterResume(_)),
            ) => return self.cluster_call(tok, id, call),
            Some(Call::ServiceList(l)) => self.list(&l.names),
            Some(Call::ServiceControl(c)) => return self.control(tok, id, c),
            Some(Call::Logs(l)) => return self.logs(tok, id, l),
            Some(Call::Power(p)) => match pb::PowerAction::try_from(p.action) {
                Ok(pb::PowerAction::Reboot) => {
                    self.reply(tok, id, Ok(Reply::Power(pb::PowerReply {})));
                    self.begin_shutdown(PowerAction::Reboot);
                    return;
                }
                Ok(pb::PowerAction::Poweroff) => {
                    self.reply(tok, id, Ok(Reply::Power(pb::PowerReply {})));
                    self.begin_shutdown(PowerAction::Poweroff);
                    return;
                }
                _ => Err((
                    pb::ErrorCode::InvalidRequest,
                    format!("power request {id}: unknown action {}", p.action),
                )),
            },
            Some(Call::BootTime(_)) => Ok(Reply::BootTime(pb::BootTimeline {
                events: self
                    .timeline
                    .events()
                    .iter()
                    .map(|(name, at)| pb::BootEvent {
                        name: name.clone(),
                        at_us: *at,
                    })
                    .collect(),
            })),
            Some(Call::BootStatus(_)) => match self.keeper.slots() {
                Ok(slots) => Ok(Reply::BootStatus(wire::boot_status(&slots.status()))),
                Err(why) => Err((pb::ErrorCode::Unavailable, why.to_string())),
            },
            Some(Call::BootControl(_)) if self.upgrades.run.is_some() => Err((
                pb::ErrorCode::Unavailable,
                "an upgrade or rollback is running: the boot slots are its until it ends".into(),
            )),
            Some(Call::BootControl(b)) => {
                match (
                    self.keeper.slots_mut(),
                    wire::slot_from_pb(b.slot),
                    wire::boot_request(b.action),
                ) {
                    (Err(why), _, _) => Err((pb::ErrorCode::Unavailable, why.to_string())),
                    (Ok(_), None, _) => Err((
                        pb::ErrorCode::InvalidRequest,
                        format!("boot request {id}: name slot A or B"),
                    )),
                    (Ok(_), _, None) => Err((
                        pb::ErrorCode::InvalidRequest,
                        format!("boot request {id}: name an action: once or set-default"),
                    )),
                    (Ok(slots), Some(slot), Some(action)) => {
                        let r = slots
                            .control(action, slot, b.force)
                            .map(|s| Reply::BootStatus(wire::boot_status(&s)))
                            .map_err(|e| wire::boot_control_error(&e));
                        if r.is_ok() {
                            crate::log!(
                                "boot: {} slot {slot}{}",
                                action.label(),
                                if b.force { " (forced)" } else { "" }
                            );
                        }
                        r
                    }
                }
            }
            Some(Call::Upgrade(u)) => {
                match self.start_run(
                    tok,
                    id,
                    bascule_sequencer::journal::RunKind::Upgrade,
                    Some(u),
                ) {
                    Some(answer) => answer,
                    // Events and the outcome follow from the run.
                    None => return,
                }
            }
            // Never answered: the socket's flow control is the answer.
            Some(Call::UpgradeData(d)) => return self.upgrade_data(tok, d),
            Some(Call::UpgradeStatus(_)) => self.upgrade_status(),
            Some(Call::Rollback(_)) => {
                match self.start_run(tok, id, bascule_sequencer::journal::RunKind::Rollback, None) {
                    Some(answer) => answer,
                    None => return,
                }
            }
            Some(Call::Cancel(c)) => {
                if let Some(conn) = self.control.conn_mut(tok) {
                    let before = conn.follows.len();
                    conn.follows.retain(|f| f.request_id != c.request_id);
                    if conn.follows.len() != before {
                        conn.send(&pb::Response {
                            id: c.request_id,
                            more: false,
                            result: Some(Reply::Log(pb::LogChunk::default())),
                        });
                    }
                }
                Ok(Reply::Cancel(pb::CancelReply {}))
            }
        };
        self.reply(tok, id, reply);
    }

    pub(crate) fn reply(
        &mut self,
        tok: u64,
        id: u64,
        reply: Result<Reply, (pb::ErrorCode, String)>,
    ) {
        let resp = match reply {
            Ok(r) => pb::Response {
                id,
                more: false,
                result: Some(r),
            },
            Err((code, msg)) => error_response(id, code, msg),
        };
        self.control.reply(&self.epoll, tok, &resp);
    }

    fn list(&self, names: &[String]) -> Result<Reply, (pb::ErrorCode, String)> {
        let all = self.sup.list(self.now());
        if names.is_empty() {
            return Ok(Reply::ServiceList(pb::ServiceListReply {
                services: all.iter().map(wire::service_status).collect(),
            }));
        }
        let mut out = Vec::new();
        for n in names {
            match all.iter().find(|s| &s.name == n) {
                Some(s) => out.push(wire::service_status(s)),
                None => return Err((pb::ErrorCode::NotFound, format!("no service named {n:?}"))),
            }
        }
        Ok(Reply::ServiceList(pb::ServiceListReply { services: out }))
    }

    fn control(&mut self, tok: u64, id: u64, c: pb::ServiceControlRequest) {
        let now = self.now();
        let name = c.name.clone();
        let generation = self.sup.generation(&name);
        let was_active = self.sup.service(&name).is_some_and(|s| s.state.is_active());
        let outcome = match pb::ServiceAction::try_from(c.action) {
            Ok(pb::ServiceAction::Status) => {
                let r = self.sup.status(&name, now).map(|status| {
                    Reply::ServiceControl(pb::ServiceControlReply {
                        status: Some(wire::service_status(&status)),
                    })
                });
                return self.reply(tok, id, r.map_err(control_error));
            }
            Ok(pb::ServiceAction::Start) => {
                self.sup
                    .start(&name, now, self.launcher.launcher())
                    .map(|_| WaitFor::Up {
                        // Already running: wait only for readiness of the current process.
                        after_generation: if was_active {
                            generation.saturating_sub(1)
                        } else {
                            generation
                        },
                    })
            }
            Ok(pb::ServiceAction::Restart) => self
                .sup
                .restart(&name, now, self.launcher.launcher())
                .map(|_| WaitFor::Up {
                    after_generation: generation,
                }),
            Ok(pb::ServiceAction::Stop) => self
                .sup
                .stop(&name, now, self.launcher.launcher())
                .map(|_| WaitFor::Down),
            _ => {
                return self.reply(
                    tok,
                    id,
                    Err((
                        pb::ErrorCode::InvalidRequest,
                        format!("service {name}: unknown action {}", c.action),
                    )),
                )
            }
        };
        match outcome {
            Ok(wait) => self.waiters.push(
                &name,
                Waiter {
                    conn: tok,
                    request_id: id,
                    wait,
                    deadline: now + CONTROL_WAIT,
                },
            ),
            Err(e) => self.reply(tok, id, Err(control_error(e))),
        }
        self.resolve_waiters();
    }

    /// Answers every waiter whose service has settled or whose time is up.
    pub(crate) fn resolve_waiters(&mut self) {
        let now = self.now();
        let sup = &self.sup;
        let done = self.waiters.resolve(now, |service, wait| match wait {
            WaitFor::Up { after_generation } => sup.settled_up(service, after_generation),
            WaitFor::Down => sup.settled_down(service),
        });
        for (service, w, outcome) in done {
            let reply = match outcome {
                Outcome::Settled => self
                    .sup
                    .status(&service, now)
                    .map(|s| {
                        Reply::ServiceControl(pb::ServiceControlReply {
                            status: Some(wire::service_status(&s)),
                        })
                    })
                    .map_err(control_error),
                Outcome::TimedOut => Err((
                    pb::ErrorCode::Timeout,
                    format!("service {service} did not settle within {CONTROL_WAIT:?}"),
                )),
            };
            self.reply(w.conn, w.request_id, reply);
        }
    }

    fn logs(&mut self, tok: u64, id: u64, l: pb::LogsRequest) {
        let Some(ring) = self.logs.ring(&l.name) else {
            let reason = self
                .sup
                .rejected()
                .iter()
                .find(|r| r.name == l.name)
                .map(|r| {
                    format!(
                        "service {} has no logs: it was rejected: {}",
                        l.name, r.reason
                    )
                })
                .unwrap_or_else(|| format!("no service named {:?}", l.name));
            return self.reply(tok, id, Err((pb::ErrorCode::NotFound, reason)));
        };
        let (lines, cursor) = ring.tail(l.tail as usize);
        let mut chunks: Vec<Vec<pb::LogLine>> = Vec::new();
        let mut size = 0;
        for line in lines {
            if chunks.is_empty() || size + line.text.len() > LOG_CHUNK_BYTES {
                chunks.push(Vec::new());
                size = 0;
            }
            size += line.text.len() + bascule_services::logs::LINE_OVERHEAD;
            if let Some(c) = chunks.last_mut() {
                c.push(wire::log_line(line));
            }
        }
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let n = chunks.len();
        for (i, lines) in chunks.into_iter().enumerate() {
            let more = l.follow || i + 1 < n;
            // A client too far behind is dropped with a log line, never
            // left with a reply cut short.
            let resp = pb::Response {
                id,
                more,
                result: Some(Reply::Log(pb::LogChunk { lines, dropped: 0 })),
            };
            self.control.reply(&self.epoll, tok, &resp);
        }
        let Some(conn) = self.control.conn_mut(tok) else {
            return;
        };
        if l.follow {
            conn.follows.push(crate::conn::Follow {
                request_id: id,
                service: l.name.clone(),
                cursor,
                dropped: 0,
            });
        }
        self.control.service(&self.epoll, tok);
    }
}

fn control_error(e: ControlError) -> (pb::ErrorCode, String) {
    let code = match &e {
        ControlError::NotFound(_) => pb::ErrorCode::NotFound,
        ControlError::Rejected { .. } => pb::ErrorCode::Failed,
        ControlError::Refused { .. } => pb::ErrorCode::Unavailable,
    };
    (code, e.to_string())
}
