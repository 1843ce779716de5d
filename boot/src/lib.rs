//! Everything a bootloader reads: the disk layout, GRUB's environment and
//! configuration, systemd-boot entries and EFI variables, and the META record.
#![deny(unsafe_code)]

pub mod layout;
