//! The journal: every phase with its times, saved as it goes, in a stable
//! JSON form.

use super::fake::{bundle, host_with, Fail, START_UNIX_MS};
use super::run;
use crate::host::RebootMode;
use crate::journal::{Journal, Phase, PhaseStatus, RecordedOutcome, RunKind};
use crate::options::UpgradeOptions;
use crate::outcome::{Outcome, Recovery};
use bascule_boot::Slot;

#[test]
fn every_phase_is_recorded_with_its_start_duration_and_bytes() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    let j = &done.journal;
    assert_eq!(j.kind, RunKind::Upgrade);
    assert_eq!(
        (j.from_slot, j.from_version.as_str()),
        (Some(Slot::A), "1.0.0")
    );
    assert_eq!(
        (j.to_slot, j.to_version.as_deref()),
        (Some(Slot::B), Some("2.0.0"))
    );
    assert_eq!(j.phases.len(), 10);
    let mut last_start = START_UNIX_MS;
    for p in &j.phases {
        assert!(
            p.duration_ms.is_some_and(|d| d > 0),
            "{}: {:?}",
            p.phase,
            p.duration_ms
        );
        assert!(p.started_unix_ms >= last_start, "{}", p.phase);
        last_start = p.started_unix_ms;
        assert_ne!(p.status, PhaseStatus::Running, "{}", p.phase);
        assert_eq!(p.error, None);
    }
    let total: u64 = b.manifest.payloads.iter().map(|p| p.size).sum();
    for phase in [Phase::Verify, Phase::Install] {
        let rec = j.phase(phase).expect("phase");
        assert_eq!((rec.bytes_done, rec.bytes_total), (total, total), "{phase}");
    }
    assert_eq!(
        j.outcome,
        Some(RecordedOutcome::Rebooting {
            mode: RebootMode::Kexec
        })
    );
}

#[test]
fn the_journal_is_saved_at_each_phase_and_before_the_reboot() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    // A start and an end per phase, one before the reboot call, one with
    // the outcome.
    assert_eq!(host.journals.len(), 10 * 2 + 2);
    assert_eq!(host.journals.last(), Some(&done.journal));
    // The copy saved just before the reboot request already shows the
    // install done and the reboot running.
    let reboot_at = host.position("reboot(kexec)").expect("rebooted");
    let saves_before = host.calls[..reboot_at]
        .iter()
        .filter(|c| **c == super::fake::Call::SaveJournal)
        .count();
    let saved = &host.journals[saves_before - 1];
    assert_eq!(
        saved.phase(Phase::Install).map(|p| p.status),
        Some(PhaseStatus::Done)
    );
    assert_eq!(
        saved.phase(Phase::Reboot).map(|p| p.status),
        Some(PhaseStatus::Running)
    );
}

#[test]
fn a_failing_journal_save_does_not_stop_the_upgrade() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::SaveJournal);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
    let notes = &done.journal.phase(Phase::Verify).expect("verify").notes;
    assert!(notes
        .iter()
        .any(|n| matches!(n, crate::Note::JournalNotSaved { .. })));
}

#[test]
fn an_abort_is_recorded_with_its_phase_error_and_recovery() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::Unmount("/var".into()));
    let (done, _) = run(&mut host, UpgradeOptions::default());
    match &done.journal.outcome {
        Some(RecordedOutcome::Aborted {
            phase: Phase::Unmount,
            error,
            recovery: Recovery::RebootCurrentSlot,
        }) => assert!(error.contains("/var"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_json_form_is_stable_and_round_trips() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.holders
        .insert("/var".into(), vec![super::fake::holder(5, "tail")]);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    let text = done.journal.to_json().expect("json");
    for needle in [
        r#""format": 1"#,
        r#""kind": "upgrade""#,
        r#""from_slot": "A""#,
        r#""to_slot": "B""#,
        r#""to_version": "2.0.0""#,
        r#""phase": "leave_cluster""#,
        r#""status": "skipped""#,
        r#""note": "holder_found""#,
        r#""how": "open_file""#,
        r#""kind": "rootfs""#,
        r#""result": "rebooting""#,
        r#""mode": "kexec""#,
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    assert_eq!(Journal::from_json(&text).expect("parse"), done.journal);
    // An older journal without the optional fields still reads.
    let minimal = r#"{"format":1,"kind":"rollback","started_unix_ms":5,
        "from_slot":"B","from_version":"1.0","phases":[
        {"phase":"verify","started_unix_ms":5,"status":"running"}]}"#;
    let j = Journal::from_json(minimal).expect("minimal");
    assert_eq!(j.phases[0].duration_ms, None);
    assert_eq!(j.outcome, None);
}
