//! Which bootloader and firmware an image is for. A leaf module: the image
//! builder, the loader configuration and the QEMU command line all use
//! these types, and none of them may import another for them.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootloader {
    Grub,
    SdBoot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF.
    Uefi,
}

impl FromStr for Bootloader {
    type Err = Error;
    fn from_str(s: &str) -> Result<Bootloader> {
        match s {
            "grub" => Ok(Bootloader::Grub),
            "sd-boot" | "systemd-boot" => Ok(Bootloader::SdBoot),
            _ => Err(Error::Invalid(format!(
                "unknown bootloader {s:?}: expected grub or sd-boot"
            ))),
        }
    }
}

impl FromStr for Firmware {
    type Err = Error;
    fn from_str(s: &str) -> Result<Firmware> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "uefi" => Ok(Firmware::Uefi),
            _ => Err(Error::Invalid(format!(
                "unknown firmware {s:?}: expected bios or uefi"
            ))),
        }
    }
}

impl fmt::Display for Bootloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bootloader::Grub => "grub",
            Bootloader::SdBoot => "sd-boot",
        })
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        })
    }
}

/// Rejects combinations that cannot boot.
pub fn check_combination(bootloader: Bootloader, firmware: Firmware) -> Result<()> {
    if bootloader == Bootloader::SdBoot && firmware == Firmware::Bios {
        return Err(Error::Invalid(
            "systemd-boot is a UEFI application and cannot boot on BIOS: use --firmware uefi, or --bootloader grub"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_combinations() {
        assert_eq!(
            "sd-boot".parse::<Bootloader>().ok(),
            Some(Bootloader::SdBoot)
        );
        assert_eq!("uefi".parse::<Firmware>().ok(), Some(Firmware::Uefi));
        assert!("lilo".parse::<Bootloader>().is_err());
        assert!(check_combination(Bootloader::SdBoot, Firmware::Bios).is_err());
        for (b, f) in [
            (Bootloader::Grub, Firmware::Bios),
            (Bootloader::Grub, Firmware::Uefi),
            (Bootloader::SdBoot, Firmware::Uefi),
        ] {
            check_combination(b, f).expect("supported");
        }
    }
}
