//! Names of partition types: GPT type GUIDs and MBR type bytes, in the
//! words `fdisk` uses, so a listing says "EFI System" rather than
//! `C12A7328-…`. Unknown types keep their raw value only.

/// What a partition type says about its content, for the default volume
/// choice and for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Holds a filesystem or data of its own.
    Data,
    /// The EFI system partition (a FAT filesystem the firmware boots).
    EfiSystem,
    /// A BIOS boot partition (GRUB's core image, no filesystem).
    BiosBoot,
    /// An MBR extended partition: a container of logical partitions.
    Extended,
}

/// GPT type GUIDs (upper case, as sfdisk prints them) and their names.
const GPT_TYPES: &[(&str, &str)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    (
        "024DEE41-33E7-11D3-9D69-0008C781F39F",
        "MBR partition scheme",
    ),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", "Linux server data"),
    ("8DA63339-0007-60C0-C436-083AC8230908", "Linux reserved"),
    ("CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS"),
    (
        "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        "Linux extended boot",
    ),
    (
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "Linux root (x86-64)",
    ),
    ("44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)"),
    (
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        "Linux root (ARM-64)",
    ),
    ("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "Linux root (ARM)"),
    (
        "8484680C-9521-48C6-9C11-B0720656F69E",
        "Linux /usr (x86-64)",
    ),
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "Microsoft basic data",
    ),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    (
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
        "Windows recovery environment",
    ),
    ("48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS/HFS+"),
    ("7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS"),
    (
        "6A898CC3-1DD2-11B2-99A6-080020736631",
        "Solaris /usr & Apple ZFS",
    ),
    ("516E7CB6-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS"),
    ("516E7CBA-6ECF-11D6-8FF8-00022D09712B", "FreeBSD ZFS"),
    ("83BD6B9D-7F41-11DC-BE0B-001560B84F0F", "FreeBSD boot"),
];

/// MBR type bytes and fdisk's names for them.
const MBR_TYPES: &[(u8, &str)] = &[
    (0x01, "FAT12"),
    (0x04, "FAT16 <32M"),
    (0x05, "Extended"),
    (0x06, "FAT16"),
    (0x07, "HPFS/NTFS/exFAT"),
    (0x0b, "W95 FAT32"),
    (0x0c, "W95 FAT32 (LBA)"),
    (0x0e, "W95 FAT16 (LBA)"),
    (0x0f, "W95 Ext'd (LBA)"),
    (0x11, "Hidden FAT12"),
    (0x14, "Hidden FAT16 <32M"),
    (0x16, "Hidden FAT16"),
    (0x17, "Hidden HPFS/NTFS"),
    (0x1b, "Hidden W95 FAT32"),
    (0x1c, "Hidden W95 FAT32 (LBA)"),
    (0x1e, "Hidden W95 FAT16 (LBA)"),
    (0x27, "Hidden NTFS WinRE"),
    (0x82, "Linux swap / Solaris"),
    (0x83, "Linux"),
    (0x85, "Linux extended"),
    (0x86, "NTFS volume set"),
    (0x87, "NTFS volume set"),
    (0x8e, "Linux LVM"),
    (0xa5, "FreeBSD"),
    (0xa6, "OpenBSD"),
    (0xa8, "Darwin UFS"),
    (0xa9, "NetBSD"),
    (0xaf, "HFS / HFS+"),
    (0xbf, "Solaris"),
    (0xda, "Non-FS data"),
    (0xee, "GPT"),
    (0xef, "EFI (FAT-12/16/32)"),
    (0xfb, "VMware VMFS"),
    (0xfd, "Linux raid autodetect"),
];

/// The name of a GPT type GUID (as formatted by [`super::gpt::guid`]).
pub fn gpt_name(guid: &str) -> Option<&'static str> {
    GPT_TYPES
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(guid))
        .map(|(_, n)| *n)
}

/// The role of a GPT type GUID.
pub fn gpt_role(guid: &str) -> Role {
    match gpt_name(guid) {
        Some("EFI System") => Role::EfiSystem,
        Some("BIOS boot") => Role::BiosBoot,
        _ => Role::Data,
    }
}

/// The name of an MBR type byte.
pub fn mbr_name(kind: u8) -> Option<&'static str> {
    MBR_TYPES.iter().find(|(k, _)| *k == kind).map(|(_, n)| *n)
}

/// The role of an MBR type byte.
pub fn mbr_role(kind: u8) -> Role {
    match kind {
        0x05 | 0x0f | 0x85 => Role::Extended,
        0xef => Role::EfiSystem,
        _ => Role::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles() {
        assert_eq!(
            gpt_name("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            Some("EFI System")
        );
        assert_eq!(
            gpt_role("21686148-6449-6E6F-744E-656564454649"),
            Role::BiosBoot
        );
        assert_eq!(gpt_name("00000000-0000-0000-0000-000000000001"), None);
        assert_eq!(mbr_name(0x8e), Some("Linux LVM"));
        assert_eq!(mbr_role(0x0f), Role::Extended);
        assert_eq!(mbr_name(0x42), None);
    }
}
