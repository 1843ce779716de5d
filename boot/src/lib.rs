//! Everything a bootloader reads: the disk layout, GRUB's environment and
//! configuration, systemd-boot entries and EFI variables, and the META record.
#![deny(unsafe_code)]

pub mod gpt;
pub mod layout;

pub mod adapter;
pub mod atomicfile;
pub mod blockio;
pub mod bls;
pub mod bootcount;
pub mod efivar;
#[doc(hidden)]
pub mod fuzzing;
pub mod grubcfg;
pub mod grubenv;
pub mod meta;
pub mod meta_record;
pub mod slot;

pub use slot::Slot;
