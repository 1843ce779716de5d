//! The upgrade record kept in the META partition, as protobuf messages
//! (prost derive, no build script). Protobuf keeps the record readable by
//! older and newer Bascule versions: unknown fields are skipped, missing
//! ones take their defaults.

use crate::slot::Slot;

/// A slot in the record (0 means "none").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SlotId {
    Unspecified = 0,
    A = 1,
    B = 2,
}

impl SlotId {
    /// The slot, or `None` for `Unspecified`.
    pub fn slot(self) -> Option<Slot> {
        match self {
            SlotId::Unspecified => None,
            SlotId::A => Some(Slot::A),
            SlotId::B => Some(Slot::B),
        }
    }
}

impl From<Slot> for SlotId {
    fn from(s: Slot) -> Self {
        match s {
            Slot::A => SlotId::A,
            Slot::B => SlotId::B,
        }
    }
}

impl From<Option<Slot>> for SlotId {
    fn from(s: Option<Slot>) -> Self {
        s.map_or(SlotId::Unspecified, SlotId::from)
    }
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SlotState {
    Unspecified = 0,
    /// Nothing installed (a new disk's second slot), or wiped.
    Empty = 1,
    /// Booted and confirmed.
    Good = 2,
    /// Its try failed, or it was marked bad: never booted by default.
    Bad = 3,
    /// Installed and being tried once.
    Trying = 4,
    /// Written and checked from a bundle while the machine ran, not yet
    /// tried: `prepared` names the bundle.
    Prepared = 5,
}

/// A slot's version and state.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SlotInfo {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(enumeration = "SlotState", tag = "2")]
    pub state: i32,
    /// For a prepared slot: the fingerprint of the bundle's manifest it
    /// was written from (empty otherwise).
    #[prost(bytes = "vec", tag = "3")]
    pub prepared: Vec<u8>,
}

/// A boot-once try that has been set up and not yet resolved.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PendingTry {
    #[prost(enumeration = "SlotId", tag = "1")]
    pub slot: i32,
    #[prost(string, tag = "2")]
    pub version: String,
    /// How many boots of this try have started.
    #[prost(uint32, tag = "3")]
    pub attempts: u32,
    /// What the try is for: decides what its confirmation does.
    #[prost(enumeration = "TryKind", tag = "4")]
    pub kind: i32,
}

/// Why a slot is being tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TryKind {
    /// The operator's boot-once: once confirmed, the default stays.
    Once = 0,
    /// An upgrade: once confirmed, the new slot becomes the default.
    Upgrade = 1,
}

/// The last failed try (or other failure worth reporting after a reboot).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Failure {
    #[prost(enumeration = "SlotId", tag = "1")]
    pub slot: i32,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub reason: String,
    /// Seconds since the Unix epoch.
    #[prost(uint64, tag = "4")]
    pub at_unix_secs: u64,
}

/// The whole META record.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MetaRecord {
    /// The slot that boots by default (the last confirmed one).
    #[prost(enumeration = "SlotId", tag = "1")]
    pub active_slot: i32,
    /// The slot that was active before the last switch (the rollback target).
    #[prost(enumeration = "SlotId", tag = "2")]
    pub previous_slot: i32,
    #[prost(message, optional, tag = "3")]
    pub pending_try: Option<PendingTry>,
    #[prost(message, optional, tag = "4")]
    pub last_failure: Option<Failure>,
    #[prost(message, optional, tag = "5")]
    pub slot_a: Option<SlotInfo>,
    #[prost(message, optional, tag = "6")]
    pub slot_b: Option<SlotInfo>,
    /// An upgrade to apply early in the next boot, before services start
    /// and before /var is mounted. Cleared before it is acted on, so a
    /// staged upgrade that fails cannot loop.
    #[prost(message, optional, tag = "7")]
    pub staged: Option<StagedApply>,
}

/// A prepared slot that the next boot of `from_slot` applies.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StagedApply {
    /// The slot that staged it: only its boot applies it.
    #[prost(enumeration = "SlotId", tag = "1")]
    pub from_slot: i32,
    /// The prepared slot to try.
    #[prost(enumeration = "SlotId", tag = "2")]
    pub slot: i32,
    #[prost(string, tag = "3")]
    pub version: String,
    /// Recreate EPHEMERAL before the try (the upgrade was not asked to
    /// preserve data).
    #[prost(bool, tag = "4")]
    pub wipe_data: bool,
    /// Reboot through the firmware instead of kexec.
    #[prost(bool, tag = "5")]
    pub firmware_reboot: bool,
}

impl MetaRecord {
    /// The record of a freshly built disk: `active` holds `version` and is
    /// good, the other slot is empty.
    pub fn fresh(active: Slot, version: &str) -> Self {
        let mut r = MetaRecord {
            active_slot: SlotId::from(active) as i32,
            ..Default::default()
        };
        *r.slot_info_mut(active) = SlotInfo {
            version: version.to_string(),
            state: SlotState::Good as i32,
            ..Default::default()
        };
        *r.slot_info_mut(active.other()) = SlotInfo {
            version: String::new(),
            state: SlotState::Empty as i32,
            ..Default::default()
        };
        r
    }

    /// The active slot, if recorded.
    pub fn active(&self) -> Option<Slot> {
        self.active_slot().slot()
    }

    /// The previous slot, if recorded.
    pub fn previous(&self) -> Option<Slot> {
        self.previous_slot().slot()
    }

    /// A slot's version and state (defaults when not recorded).
    pub fn slot_info(&self, slot: Slot) -> SlotInfo {
        match slot {
            Slot::A => self.slot_a.clone(),
            Slot::B => self.slot_b.clone(),
        }
        .unwrap_or_default()
    }

    /// A slot's entry, created when missing.
    pub fn slot_info_mut(&mut self, slot: Slot) -> &mut SlotInfo {
        match slot {
            Slot::A => self.slot_a.get_or_insert_with(SlotInfo::default),
            Slot::B => self.slot_b.get_or_insert_with(SlotInfo::default),
        }
    }

    /// The slot of the pending try, if any.
    pub fn pending_slot(&self) -> Option<Slot> {
        self.pending_try.as_ref().and_then(|t| t.slot().slot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn fresh_record() {
        let r = MetaRecord::fresh(Slot::A, "1.0");
        assert_eq!(r.active(), Some(Slot::A));
        assert_eq!(r.previous(), None);
        assert_eq!(r.slot_info(Slot::A).state(), SlotState::Good);
        assert_eq!(r.slot_info(Slot::A).version, "1.0");
        assert_eq!(r.slot_info(Slot::B).state(), SlotState::Empty);
        assert_eq!(r.pending_slot(), None);
    }

    #[test]
    fn full_record_round_trips() {
        let mut r = MetaRecord::fresh(Slot::A, "1.0");
        r.set_previous_slot(SlotId::B);
        r.pending_try = Some(PendingTry {
            slot: SlotId::B as i32,
            version: "1.1".into(),
            attempts: 1,
            kind: 0,
        });
        r.last_failure = Some(Failure {
            slot: SlotId::B as i32,
            version: "1.1-rc1".into(),
            reason: "self-check: etcd not healthy within 120s".into(),
            at_unix_secs: 1_790_000_000,
        });
        r.slot_info_mut(Slot::B).set_state(SlotState::Trying);
        let bytes = r.encode_to_vec();
        let back = MetaRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.pending_slot(), Some(Slot::B));
        assert_eq!(back.slot_info(Slot::B).state(), SlotState::Trying);
    }

    #[test]
    fn unknown_enum_values_read_as_unspecified() {
        let r = MetaRecord {
            active_slot: 7,
            ..Default::default()
        };
        let back = MetaRecord::decode(r.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.active(), None);
    }

    #[test]
    fn slot_id_conversions() {
        assert_eq!(SlotId::from(Slot::B).slot(), Some(Slot::B));
        assert_eq!(SlotId::from(None::<Slot>), SlotId::Unspecified);
    }
}
