#![deny(unsafe_code)]
//! Building Bascule disk images: Debian's kernel and the modules the init
//! needs, the initramfs, each slot's squashfs root, the ESP with its
//! bootloader, and a GPT disk image written without loop devices; plus the
//! QEMU command line that boots such an image.
//!
//! Entry points: [`image::build_image`] (everything), [`cargo::build_static_binaries`]
//! (the init and the CLI, as static binaries), [`qemu::QemuConfig`] (how to
//! boot it), [`bundle`] (a slot as a signed upgrade bundle). The partition
//! layout itself lives in [`layout`] (re-exported from `bascule-boot`),
//! shared with the running init.
//!
//! [`gpt`] depends on nothing but `std`, `thiserror` and `crc32fast`, so the
//! init and the sequencer can use its reader to verify and search a disk.

pub use bascule_boot::layout;
pub use bascule_boot::Slot;

pub mod bundle;
pub mod cargo;
pub mod cmd;
pub mod cpio;
pub mod disk;
pub mod dynlib;
pub mod error;
pub mod esp;
pub use bascule_boot::gpt;
pub mod grub;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod loader;
pub mod modules;
pub mod platform;
pub mod qemu;
pub mod squashfs;
pub mod state;

pub use error::{Error, Result};
pub use image::{
    build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, SlotBuild,
};
pub use qemu::{DirectBoot, QemuConfig};
