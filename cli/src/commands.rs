//! One function per command: send the request, print the reply.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_api::{Client, ClientError, VERSION};
use serde::Serialize;

use crate::args::{Action, Cli, Command, UpgradeCommand};
use crate::exit::Failure;
use crate::output;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        socket: &cli.socket,
        timeout: cli.timeout,
        json: cli.json,
    };
    match &cli.command {
        Command::Services { names } => services(&ctx, names),
        Command::Service { name, action } => service(&ctx, name, *action),
        Command::Logs { follow, tail, name } => logs(&ctx, name, *tail, *follow),
        Command::Reboot => power(&ctx, "reboot", pb::PowerAction::Reboot),
        Command::Shutdown => power(&ctx, "shutdown", pb::PowerAction::Poweroff),
        Command::Version => version(&ctx),
        Command::BootTime => boot_time(&ctx),
        Command::Boot { command } => {
            let (what, call) = crate::boot::request(command);
            let reply = ctx.call(what, call)?;
            print(&crate::boot::output(reply, what, ctx.json)?)
        }
        Command::Upgrade(args) => match args.command {
            Some(UpgradeCommand::Status) => crate::journal::run(&ctx),
            None => crate::upgrade::run(&ctx, args),
        },
        Command::Rollback { force, wait } => crate::rollback::run(&ctx, *force, wait),
        Command::Cluster { command } => crate::cluster::run(&ctx, command),
    }
}

pub(crate) struct Ctx<'a> {
    pub socket: &'a Path,
    pub timeout: Duration,
    pub json: bool,
}

impl Ctx<'_> {
    pub fn fail(&self, what: &str, err: &ClientError) -> Failure {
        Failure::client(what, self.socket, err)
    }

    pub fn connect(&self, what: &str) -> Result<Client, Failure> {
        Client::connect(self.socket, self.timeout).map_err(|e| self.fail(what, &e))
    }

    /// One request, one reply. `what` names the object for error messages.
    pub fn call(&self, what: &str, call: Call) -> Result<Reply, Failure> {
        let mut client = self.connect(what)?;
        client.call(call).map_err(|e| self.fail(what, &e))
    }
}

/// The server answered with a different message type than the request calls for.
pub(crate) fn unexpected(what: &str) -> Failure {
    Failure::failed(format!("{what}: the server sent an unexpected reply"))
}

/// Writes to stdout; a closed pipe becomes a quiet exit (see `Failure::output`).
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::output)
}

pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::failed(format!("cannot encode JSON: {e}")))?;
    text.push('\n');
    print(&text)
}

fn services(ctx: &Ctx, names: &[String]) -> Result<(), Failure> {
    let what = if names.is_empty() {
        "services".to_string()
    } else {
        format!("services {}", names.join(", "))
    };
    let req = pb::ServiceListRequest {
        names: names.to_vec(),
    };
    let Reply::ServiceList(list) = ctx.call(&what, Call::ServiceList(req))? else {
        return Err(unexpected(&what));
    };
    if ctx.json {
        let rows: Vec<output::ServiceJson> = list.services.iter().map(Into::into).collect();
        print_json(&rows)
    } else {
        print(&output::services_table(&list.services))
    }
}

fn service(ctx: &Ctx, name: &str, action: Action) -> Result<(), Failure> {
    let what = format!("service {name:?}");
    let req = pb::ServiceControlRequest {
        name: name.to_string(),
        action: action.to_pb() as i32,
    };
    let mut client = ctx.connect(&what)?;
    if action != Action::Status {
        // The server replies once the service has settled (stopped, ready or
        // failed), which may take its whole grace period or readiness timeout.
        client.set_reply_timeout(
            ctx.timeout
                .max(bascule_api::client::CONTROL_SETTLE + Duration::from_secs(10)),
        );
    }
    let reply = client
        .call(Call::ServiceControl(req))
        .map_err(|e| ctx.fail(&what, &e))?;
    let Reply::ServiceControl(reply) = reply else {
        return Err(unexpected(&what));
    };
    let Some(status) = reply.status else {
        return Err(Failure::failed(format!(
            "{what}: the server sent no status"
        )));
    };
    if ctx.json {
        print_json(&output::ServiceJson::from(&status))?;
    } else if action == Action::Status {
        print(&output::service_details(&status))?;
    } else {
        print(&output::service_summary(&status))?;
    }
    // Scripts rely on the exit code: the service must have ended up where
    // it was asked to go.
    let state = pb::ServiceState::try_from(status.state).unwrap_or(pb::ServiceState::Unspecified);
    let reached = match action {
        Action::Status => true,
        Action::Start | Action::Restart => {
            matches!(state, pb::ServiceState::Running | pb::ServiceState::Exited)
        }
        Action::Stop => !matches!(
            state,
            pb::ServiceState::Running | pb::ServiceState::Starting | pb::ServiceState::Stopping
        ),
    };
    if reached {
        Ok(())
    } else {
        let why = if status.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", status.reason)
        };
        Err(Failure::failed(format!("{what} is {}{why}", state.label())))
    }
}

fn logs(ctx: &Ctx, name: &str, tail: u32, follow: bool) -> Result<(), Failure> {
    let what = format!("logs of {name:?}");
    let mut client = ctx.connect(&what)?;
    // A follow stream may be silent for hours; only a tail must arrive in time.
    let idle = if follow { None } else { Some(ctx.timeout) };
    let req = pb::LogsRequest {
        name: name.to_string(),
        tail,
        follow,
    };
    let json = ctx.json;
    let mut out = io::stdout().lock();
    let mut buf = Vec::new();
    let mut write_err = None;
    let mut wrong_reply = false;
    let result = client.stream(Call::Logs(req), idle, |reply| {
        let Reply::Log(chunk) = reply else {
            wrong_reply = true;
            return false;
        };
        if chunk.dropped > 0 {
            // Ignore stderr failures: there is nowhere left to report them.
            let _ = writeln!(
                io::stderr(),
                "bascule: {} lines dropped (client too slow)",
                chunk.dropped
            );
        }
        buf.clear();
        for line in &chunk.lines {
            if json {
                // Serializing plain fields into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut buf, &output::LogLineJson::from(line));
                buf.push(b'\n');
            } else {
                output::log_line_bytes(line, &mut buf);
            }
        }
        // Flush per chunk so `-f` output appears as it arrives.
        match out.write_all(&buf).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    });
    // Dropping the client closes the connection, which ends the stream on
    // the server side; no Cancel needed when we stop reading.
    if let Some(e) = write_err {
        return Err(Failure::output(e));
    }
    result.map_err(|e| ctx.fail(&what, &e))?;
    if wrong_reply {
        return Err(unexpected(&what));
    }
    Ok(())
}

fn power(ctx: &Ctx, what: &str, action: pb::PowerAction) -> Result<(), Failure> {
    let req = pb::PowerRequest {
        action: action as i32,
    };
    let Reply::Power(_) = ctx.call(what, Call::Power(req))? else {
        return Err(unexpected(what));
    };
    if ctx.json {
        print_json(&serde_json::json!({ "action": what, "accepted": true }))
    } else {
        print(&format!("{what} requested\n"))
    }
}

#[derive(Serialize)]
struct VersionJson<'a> {
    client_version: &'a str,
    version: &'a str,
    git_commit: &'a str,
    mode: &'a str,
    booted_slot: &'a str,
    image_version: &'a str,
    boot_id: &'a str,
}

fn version(ctx: &Ctx) -> Result<(), Failure> {
    let Reply::Version(v) = ctx.call("version", Call::Version(pb::VersionRequest {}))? else {
        return Err(unexpected("version"));
    };
    let mode = match pb::RunMode::try_from(v.mode) {
        Ok(pb::RunMode::Pid1) => "pid1",
        Ok(pb::RunMode::Supervise) => "supervise",
        _ => "",
    };
    let slot = match pb::Slot::try_from(v.booted_slot) {
        Ok(pb::Slot::A) => "A",
        Ok(pb::Slot::B) => "B",
        _ => "",
    };
    if ctx.json {
        return print_json(&VersionJson {
            client_version: VERSION,
            version: &v.version,
            git_commit: &v.git_commit,
            mode,
            booted_slot: slot,
            image_version: &v.image_version,
            boot_id: &v.boot_id,
        });
    }
    let server = if v.git_commit.is_empty() {
        v.version.clone()
    } else {
        format!("{} ({})", v.version, v.git_commit)
    };
    print(&format!(
        "client: {VERSION}\nserver: {server}\nmode:   {}\nimage:  {}\nslot:   {}\nboot:   {}\n",
        output::or_dash(mode),
        output::or_dash(&v.image_version),
        output::or_dash(slot),
        output::or_dash(&v.boot_id)
    ))
}

fn boot_time(ctx: &Ctx) -> Result<(), Failure> {
    let Reply::BootTime(timeline) =
        ctx.call("boot-time", Call::BootTime(pb::BootTimeRequest {}))?
    else {
        return Err(unexpected("boot-time"));
    };
    if ctx.json {
        print_json(&output::boot_events(&timeline.events))
    } else {
        print(&output::boot_table(&timeline.events))
    }
}
