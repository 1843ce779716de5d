//! `bascule upgrade --image REF ...`: run the upgrade, show its phases, and
//! with `--wait` follow the machine through the reboot to the verdict.

use std::fs::File;
use std::path::PathBuf;

use bascule_api::pb;
use bascule_api::{UpgradeError, UpgradeOptions, UpgradeSource};
use serde::Serialize;

use crate::args::UpgradeArgs;
use crate::commands::{print, Ctx};
use crate::exit::{self, Failure};
use crate::follow::{self, Settled};
use crate::progress::{self, Mode, Progress};

/// What `--image` names.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A file here, streamed to the machine.
    Local(PathBuf),
    /// A file on the machine (from file:///PATH).
    OnMachine(String),
    /// Fetched by the machine.
    Url(String),
}

pub fn parse_ref(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err(
            "--image is empty: give a bundle file, an http(s):// URL or file:///PATH".into(),
        );
    }
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(ImageRef::Url(s.to_string()));
    }
    if lower.starts_with("file://") {
        let path = &s["file://".len()..];
        if !path.starts_with('/') {
            return Err(format!(
                "`{s}`: a file:// reference names a file on the machine and needs an absolute \
                 path, as in file:///var/b.bundle"
            ));
        }
        return Ok(ImageRef::OnMachine(path.to_string()));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "`{s}`: unsupported scheme `{scheme}`: use http://, https://, file:///PATH, or a local file"
        ));
    }
    Ok(ImageRef::Local(PathBuf::from(s)))
}

fn open_source(image: &ImageRef) -> Result<UpgradeSource, Failure> {
    Ok(match image {
        ImageRef::Url(u) => UpgradeSource::Url(u.clone()),
        ImageRef::OnMachine(p) => UpgradeSource::MachinePath(p.clone()),
        ImageRef::Local(path) => {
            let cannot = |why: String| {
                Failure::failed(format!(
                    "cannot read the bundle {}: {why} (for a file on the machine use file:///PATH)",
                    path.display()
                ))
            };
            let file = File::open(path).map_err(|e| cannot(e.to_string()))?;
            let meta = file.metadata().map_err(|e| cannot(e.to_string()))?;
            if !meta.is_file() {
                return Err(cannot("not a regular file".into()));
            }
            UpgradeSource::Stream(Box::new(file))
        }
    })
}

/// The last line of `--json`, and the data of the text summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultJson {
    pub event: &'static str,
    /// rebooting, staged, dry_run, refused, aborted, confirmed, rolled_back,
    /// wrong_version, not_confirmed, error.
    pub result: &'static str,
    pub exit_code: u8,
    pub message: String,
    pub target_slot: &'static str,
    pub target_version: String,
    pub booted_slot: &'static str,
    pub image_version: String,
    pub boot_id: String,
}

pub fn run(ctx: &Ctx, args: &UpgradeArgs) -> Result<(), Failure> {
    let mode = Mode::detect(ctx.json);
    let result = upgrade(ctx, args, mode);
    if mode == Mode::Json {
        // Scripts read the last line whatever happened.
        let last = match &result {
            Ok(r) => r.json.clone(),
            Err(f) => ResultJson {
                event: "result",
                result: "error",
                exit_code: f.code,
                message: f.message.clone().unwrap_or_default(),
                ..Default::default()
            },
        };
        progress::json_line(&serde_json::to_value(&last).unwrap_or_default());
    }
    let done = result?;
    match done.code {
        exit::SUCCESS if mode == Mode::Json => Ok(()),
        exit::SUCCESS => print(&format!("{}\n", done.summary)),
        // Failures go to stderr only, like every other error.
        code => Err(Failure::with(code, done.summary)),
    }
}

/// How an upgrade that ran to a verdict ended.
pub(crate) struct Done {
    pub json: ResultJson,
    pub code: u8,
    pub summary: String,
}

pub(crate) fn upgrade(ctx: &Ctx, args: &UpgradeArgs, mode: Mode) -> Result<Done, Failure> {
    let source = match args.image.as_deref() {
        _ if args.apply => UpgradeSource::Prepared,
        image => open_source(
            &parse_ref(image.unwrap_or_default()).map_err(|m| Failure::with(exit::USAGE, m))?,
        )?,
    };
    let what = "upgrade";
    // The boot id to tell the next boot from this one.
    let before = if args.wait.wait {
        Some(follow::before(ctx, what)?)
    } else {
        None
    };
    let options = UpgradeOptions {
        preserve: args.preserve,
        stage: args.stage,
        force: args.force,
        reboot_mode: args.reboot_mode.to_pb(),
        dry_run: args.dry_run,
        prepare: args.prepare,
    };
    let mut progress = Progress::new(mode);
    let mut client = ctx.connect(what)?;
    let outcome = client
        .upgrade(source, options, None, |e| progress.event(e))
        .map_err(|e| upgrade_failure(ctx, &e))?;
    drop(client);
    progress.clear();
    let result = outcome.result();
    let mut json = ResultJson {
        event: "result",
        result: result.label(),
        message: outcome.message.clone(),
        target_slot: outcome.target_slot().label(),
        target_version: outcome.target_version.clone(),
        booted_slot: pb::Slot::Unspecified.label(),
        ..Default::default()
    };
    let target = format!(
        "{} (slot {})",
        version_or(&outcome.target_version),
        outcome.target_slot().label()
    );
    let (code, summary) = match result {
        pb::UpgradeResult::Rebooting => (exit::SUCCESS, format!("upgrade to {target}: rebooting")),
        pb::UpgradeResult::Staged => (
            exit::SUCCESS,
            format!("upgrade to {target}: staged; the next boot tries it before its services start"),
        ),
        pb::UpgradeResult::Prepared => (
            exit::SUCCESS,
            format!("upgrade to {target}: prepared while every service kept running; `bascule upgrade --apply` boots it"),
        ),
        pb::UpgradeResult::DryRun => (
            exit::SUCCESS,
            format!("upgrade to {target}: dry run passed, nothing changed"),
        ),
        pb::UpgradeResult::Refused => (
            exit::REFUSED,
            format!("upgrade refused: {}", outcome.message),
        ),
        pb::UpgradeResult::Aborted => (
            exit::ABORTED,
            format!(
                "upgrade aborted in phase {}: {}",
                outcome.phase, outcome.message
            ),
        ),
        pb::UpgradeResult::Unspecified => (
            exit::FAILED,
            format!("upgrade ended without a known result: {}", outcome.message),
        ),
    };
    let waiting = before
        .as_ref()
        .filter(|_| result == pb::UpgradeResult::Rebooting);
    let Some(before) = waiting else {
        json.exit_code = code;
        return Ok(Done {
            json,
            code,
            summary: with_message(summary, result, &outcome.message),
        });
    };
    progress.note(&format!(
        "upgrade to {target}: rebooting; following the machine"
    ));
    let before_id = before.version.boot_id.clone();
    let (seen, verdict) = follow::follow(
        ctx,
        &before_id,
        args.wait.wait_timeout,
        &mut progress,
        |s| {
            follow::upgrade_settled(
                &before_id,
                outcome.target_slot(),
                &outcome.target_version,
                s,
            )
        },
    )?;
    json.booted_slot = seen.boot.booted().label();
    json.image_version = seen.version.image_version.clone();
    json.boot_id = seen.version.boot_id.clone();
    let running = format!(
        "{} (slot {})",
        version_or(&seen.version.image_version),
        seen.boot.booted().label()
    );
    let (result, code, summary) = match verdict {
        Settled::Confirmed => (
            "confirmed",
            exit::SUCCESS,
            format!("upgraded: {running} is running and confirmed"),
        ),
        Settled::RolledBack { reason } => {
            json.message = reason.clone();
            (
                "rolled_back",
                exit::ROLLED_BACK,
                format!("upgrade to {target} rolled back: {reason}; running {running}"),
            )
        }
        Settled::WrongVersion { running: v } => (
            "wrong_version",
            exit::FAILED,
            format!(
                "slot {} came up running {v}, not {}",
                outcome.target_slot().label(),
                outcome.target_version
            ),
        ),
    };
    json.result = result;
    json.exit_code = code;
    Ok(Done {
        json,
        code,
        summary,
    })
}

fn version_or(version: &str) -> &str {
    if version.is_empty() {
        "the new version"
    } else {
        version
    }
}

/// Successful outcomes carry a message worth a second line (what to do next).
fn with_message(summary: String, result: pb::UpgradeResult, message: &str) -> String {
    let ok = matches!(
        result,
        pb::UpgradeResult::Rebooting | pb::UpgradeResult::Staged | pb::UpgradeResult::DryRun
    );
    if ok && !message.is_empty() {
        format!("{summary}\n{message}")
    } else {
        summary
    }
}

fn upgrade_failure(ctx: &Ctx, err: &UpgradeError) -> Failure {
    match err {
        UpgradeError::Rejected(e) => {
            let code = match e.code() {
                pb::ErrorCode::PermissionDenied => exit::PERMISSION_DENIED,
                pb::ErrorCode::NotFound => exit::NOT_FOUND,
                _ => exit::REFUSED,
            };
            let phrase = exit::code_phrase(e.code());
            Failure::with(code, format!("upgrade refused: {phrase}: {}", e.message))
        }
        UpgradeError::Interrupted { .. } => Failure::with(
            exit::UNREACHABLE,
            format!("upgrade: {err} (socket {})", ctx.socket.display()),
        ),
        UpgradeError::Client(e) => ctx.fail("upgrade", e),
        UpgradeError::Bundle { .. }
        | UpgradeError::UnaskedSendBundle
        | UpgradeError::NoOutcome
        | UpgradeError::Unexpected => Failure::failed(format!("upgrade: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_ref("b.bundle"),
            Ok(ImageRef::Local(PathBuf::from("b.bundle")))
        );
        assert_eq!(
            parse_ref("/tmp/x/b.bundle"),
            Ok(ImageRef::Local(PathBuf::from("/tmp/x/b.bundle")))
        );
        assert_eq!(
            parse_ref("file:///var/b.bundle"),
            Ok(ImageRef::OnMachine("/var/b.bundle".into()))
        );
        assert_eq!(
            parse_ref("HTTPS://host/b.bundle"),
            Ok(ImageRef::Url("HTTPS://host/b.bundle".into()))
        );
        assert_eq!(
            parse_ref("http://10.0.2.2:8000/b"),
            Ok(ImageRef::Url("http://10.0.2.2:8000/b".into()))
        );
        let e = parse_ref("file://host/b").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = parse_ref("ftp://host/b").unwrap_err();
        assert!(e.contains("`ftp`"), "{e}");
        assert!(parse_ref("").is_err());
    }

    #[test]
    fn success_messages_follow_the_summary() {
        let s = with_message("a".into(), pb::UpgradeResult::Staged, "reboot to try it");
        assert_eq!(s, "a\nreboot to try it");
        let s = with_message("a".into(), pb::UpgradeResult::Refused, "dup");
        assert_eq!(s, "a");
    }
}
