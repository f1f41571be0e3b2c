//! The architectural error code, `MCi_STATUS` bits 15:0, decoded into words.
//!
//! # Background
//! SDM vol. 3B §15.9.1–15.9.2: a handful of *simple* codes, and *compound* codes whose bit
//! pattern names the unit (cache, TLB, memory controller, bus) and the transaction. Bit 12
//! (`F`) only filters corrected-error reporting, so it is ignored when matching.

use core::fmt;

/// The architectural machine-check error code (MCACOD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mcacod(pub u16);

/// Cache level of a compound code (`LL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheLevel {
    /// `00`: level 0.
    L0,
    /// `01`: level 1.
    L1,
    /// `10`: level 2.
    L2,
    /// `11`: generic.
    Generic,
}

/// Transaction type of a compound code (`TT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionType {
    /// `00`: instruction.
    Instruction,
    /// `01`: data.
    Data,
    /// `10`: generic.
    Generic,
    /// `11`: reserved.
    Reserved,
}

/// Request of a cache-hierarchy or bus code (`RRRR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheRequest {
    /// `0000` ERR.
    Generic,
    /// `0001` RD.
    Read,
    /// `0010` WR.
    Write,
    /// `0011` DRD.
    DataRead,
    /// `0100` DWR.
    DataWrite,
    /// `0101` IRD.
    InstructionFetch,
    /// `0110` PREFETCH.
    Prefetch,
    /// `0111` EVICT.
    Evict,
    /// `1000` SNOOP.
    Snoop,
    /// `1001`–`1111`: reserved.
    Reserved(u8),
}

/// Transaction of a memory-controller code (`MMM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryTransaction {
    /// `000` generic.
    Generic,
    /// `001` memory read.
    Read,
    /// `010` memory write.
    Write,
    /// `011` address/command.
    AddressCommand,
    /// `100` memory scrubbing.
    Scrub,
    /// `101`–`111`: reserved.
    Reserved(u8),
}

/// What an MCACOD says, in the SDM's categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum McacodClass {
    /// `0x0000`.
    NoError,
    /// `0x0001`.
    Unclassified,
    /// `0x0002`.
    MicrocodeRomParity,
    /// `0x0003`: external error (BINIT# from another agent).
    External,
    /// `0x0004`: functional redundancy check master/slave error.
    Frc,
    /// `0x0005`.
    InternalParity,
    /// `0x0006`.
    SmmCodeAccessViolation,
    /// `0x0400`.
    InternalTimer,
    /// `0x0E0B`.
    Io,
    /// `0x0401`–`0x07FF` (bar the timer).
    InternalUnclassified,
    /// `000F 0000 0000 11LL`.
    GenericCacheHierarchy {
        /// `LL`.
        level: CacheLevel,
    },
    /// `000F 0000 0001 TTLL`.
    Tlb {
        /// `TT`.
        transaction: TransactionType,
        /// `LL`.
        level: CacheLevel,
    },
    /// `000F 0000 1MMM CCCC`.
    MemoryController {
        /// `MMM`.
        transaction: MemoryTransaction,
        /// `CCCC`; 15 means unspecified.
        channel: u8,
    },
    /// `000F 0001 RRRR TTLL`.
    CacheHierarchy {
        /// `RRRR`.
        request: CacheRequest,
        /// `TT`.
        transaction: TransactionType,
        /// `LL`.
        level: CacheLevel,
    },
    /// `000F 1PPT RRRR IILL`.
    Bus {
        /// `PP`: 0 originated here, 1 responded, 2 observed, 3 generic.
        participation: u8,
        /// `T`.
        timeout: bool,
        /// `RRRR`.
        request: CacheRequest,
        /// `II`: 0 memory, 1 reserved, 2 I/O, 3 other.
        space: u8,
        /// `LL`.
        level: CacheLevel,
    },
    /// No SDM category matches.
    Unknown,
}

impl Mcacod {
    /// Bit 12, the corrected-error filter bit, which matching ignores.
    pub const FILTER: u16 = 1 << 12;

    /// The code without the filter bit.
    pub const fn unfiltered(self) -> u16 {
        self.0 & !Self::FILTER
    }

    /// Memory scrub (SRAO): `0x00C0`–`0x00CF`.
    pub const fn is_memory_scrub(self) -> bool {
        self.0 & 0xEFF0 == 0x00C0
    }

    /// L3 explicit write-back (SRAO): `0x017A`.
    pub const fn is_l3_writeback(self) -> bool {
        self.unfiltered() == 0x017A
    }

    /// Data load (SRAR): `0x0134`.
    pub const fn is_data_load(self) -> bool {
        self.unfiltered() == 0x0134
    }

    /// Instruction fetch (SRAR): `0x0150`.
    pub const fn is_instruction_fetch(self) -> bool {
        self.unfiltered() == 0x0150
    }

    /// The SDM category.
    pub const fn class(self) -> McacodClass {
        let code = self.unfiltered();
        let level = cache_level(code);
        match code {
            0x0000 => McacodClass::NoError,
            0x0001 => McacodClass::Unclassified,
            0x0002 => McacodClass::MicrocodeRomParity,
            0x0003 => McacodClass::External,
            0x0004 => McacodClass::Frc,
            0x0005 => McacodClass::InternalParity,
            0x0006 => McacodClass::SmmCodeAccessViolation,
            0x0400 => McacodClass::InternalTimer,
            0x0E0B => McacodClass::Io,
            0x0401..=0x07FF => McacodClass::InternalUnclassified,
            _ if code & 0xFFFC == 0x000C => McacodClass::GenericCacheHierarchy { level },
            _ if code & 0xFFF0 == 0x0010 => McacodClass::Tlb {
                transaction: transaction_type(code),
                level,
            },
            _ if code & 0xFF80 == 0x0080 => McacodClass::MemoryController {
                transaction: match (code >> 4) & 0x7 {
                    0 => MemoryTransaction::Generic,
                    1 => MemoryTransaction::Read,
                    2 => MemoryTransaction::Write,
                    3 => MemoryTransaction::AddressCommand,
                    4 => MemoryTransaction::Scrub,
                    other => MemoryTransaction::Reserved(other as u8),
                },
                channel: (code & 0xF) as u8,
            },
            _ if code & 0xFF00 == 0x0100 => McacodClass::CacheHierarchy {
                request: cache_request(code),
                transaction: transaction_type(code),
                level,
            },
            _ if code & 0xF800 == 0x0800 => McacodClass::Bus {
                participation: ((code >> 9) & 0x3) as u8,
                timeout: code & (1 << 8) != 0,
                request: cache_request(code),
                space: ((code >> 2) & 0x3) as u8,
                level,
            },
            _ => McacodClass::Unknown,
        }
    }

    /// The recovery-relevant name of the code, if it has one.
    const fn special_name(self) -> Option<&'static str> {
        if self.is_memory_scrub() {
            Some("memory scrub")
        } else if self.is_l3_writeback() {
            Some("L3 explicit write-back")
        } else if self.is_data_load() {
            Some("data load")
        } else if self.is_instruction_fetch() {
            Some("instruction fetch")
        } else {
            None
        }
    }
}

const fn cache_level(code: u16) -> CacheLevel {
    match code & 0x3 {
        0 => CacheLevel::L0,
        1 => CacheLevel::L1,
        2 => CacheLevel::L2,
        _ => CacheLevel::Generic,
    }
}

const fn transaction_type(code: u16) -> TransactionType {
    match (code >> 2) & 0x3 {
        0 => TransactionType::Instruction,
        1 => TransactionType::Data,
        2 => TransactionType::Generic,
        _ => TransactionType::Reserved,
    }
}

const fn cache_request(code: u16) -> CacheRequest {
    match (code >> 4) & 0xF {
        0 => CacheRequest::Generic,
        1 => CacheRequest::Read,
        2 => CacheRequest::Write,
        3 => CacheRequest::DataRead,
        4 => CacheRequest::DataWrite,
        5 => CacheRequest::InstructionFetch,
        6 => CacheRequest::Prefetch,
        7 => CacheRequest::Evict,
        8 => CacheRequest::Snoop,
        other => CacheRequest::Reserved(other as u8),
    }
}

impl fmt::Display for CacheLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheLevel::L0 => "L0",
            CacheLevel::L1 => "L1",
            CacheLevel::L2 => "L2",
            CacheLevel::Generic => "any level",
        })
    }
}

impl fmt::Display for TransactionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransactionType::Instruction => "instruction",
            TransactionType::Data => "data",
            TransactionType::Generic => "generic",
            TransactionType::Reserved => "reserved type",
        })
    }
}

impl fmt::Display for CacheRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheRequest::Generic => f.write_str("generic error"),
            CacheRequest::Read => f.write_str("read"),
            CacheRequest::Write => f.write_str("write"),
            CacheRequest::DataRead => f.write_str("data read"),
            CacheRequest::DataWrite => f.write_str("data write"),
            CacheRequest::InstructionFetch => f.write_str("instruction fetch"),
            CacheRequest::Prefetch => f.write_str("prefetch"),
            CacheRequest::Evict => f.write_str("eviction"),
            CacheRequest::Snoop => f.write_str("snoop"),
            CacheRequest::Reserved(code) => write!(f, "reserved request {code:#x}"),
        }
    }
}

impl fmt::Display for MemoryTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryTransaction::Generic => f.write_str("generic"),
            MemoryTransaction::Read => f.write_str("read"),
            MemoryTransaction::Write => f.write_str("write"),
            MemoryTransaction::AddressCommand => f.write_str("address/command"),
            MemoryTransaction::Scrub => f.write_str("scrub"),
            MemoryTransaction::Reserved(code) => write!(f, "reserved transaction {code:#x}"),
        }
    }
}

impl fmt::Display for McacodClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McacodClass::NoError => f.write_str("no error"),
            McacodClass::Unclassified => f.write_str("unclassified"),
            McacodClass::MicrocodeRomParity => f.write_str("microcode ROM parity error"),
            McacodClass::External => f.write_str("external error"),
            McacodClass::Frc => f.write_str("FRC error"),
            McacodClass::InternalParity => f.write_str("internal parity error"),
            McacodClass::SmmCodeAccessViolation => f.write_str("SMM handler code access violation"),
            McacodClass::InternalTimer => f.write_str("internal timer error"),
            McacodClass::Io => f.write_str("I/O error"),
            McacodClass::InternalUnclassified => f.write_str("internal unclassified error"),
            McacodClass::GenericCacheHierarchy { level } => {
                write!(f, "generic cache hierarchy, {level}")
            }
            McacodClass::Tlb { transaction, level } => write!(f, "TLB, {transaction}, {level}"),
            McacodClass::MemoryController {
                transaction,
                channel,
            } => {
                write!(f, "memory controller, {transaction}, ")?;
                if *channel == 0xF {
                    f.write_str("channel unspecified")
                } else {
                    write!(f, "channel {channel}")
                }
            }
            McacodClass::CacheHierarchy {
                request,
                transaction,
                level,
            } => write!(f, "cache hierarchy, {request}, {transaction}, {level}"),
            McacodClass::Bus {
                participation,
                timeout,
                request,
                space,
                level,
            } => {
                let role = match participation {
                    0 => "originated",
                    1 => "responded",
                    2 => "observed",
                    _ => "generic",
                };
                let space = match space {
                    0 => "memory",
                    2 => "I/O",
                    3 => "other",
                    _ => "reserved space",
                };
                write!(f, "bus/interconnect, {role}, {request}, {space}, {level}")?;
                if *timeout {
                    f.write_str(", timeout")?;
                }
                Ok(())
            }
            McacodClass::Unknown => f.write_str("unknown code"),
        }
    }
}

impl fmt::Display for Mcacod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x} (", self.0)?;
        if let Some(name) = self.special_name() {
            write!(f, "{name}: ")?;
        }
        write!(f, "{})", self.class())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn recovery_codes_are_named() {
        let cases = [
            (
                0x00C0,
                "0x00c0 (memory scrub: memory controller, scrub, channel 0)",
            ),
            (
                0x00CF,
                "0x00cf (memory scrub: memory controller, scrub, channel unspecified)",
            ),
            (
                0x017A,
                "0x017a (L3 explicit write-back: cache hierarchy, eviction, generic, L2)",
            ),
            (
                0x0134,
                "0x0134 (data load: cache hierarchy, data read, data, L0)",
            ),
            (
                0x0150,
                "0x0150 (instruction fetch: cache hierarchy, instruction fetch, instruction, L0)",
            ),
            (0x0136, "0x0136 (cache hierarchy, data read, data, L2)"),
            (0x0090, "0x0090 (memory controller, read, channel 0)"),
            (0x000F, "0x000f (generic cache hierarchy, any level)"),
            (0x0005, "0x0005 (internal parity error)"),
            (0x0E0B, "0x0e0b (I/O error)"),
            (
                0x0C0F,
                "0x0c0f (bus/interconnect, observed, generic error, other, any level)",
            ),
            (0x0019, "0x0019 (TLB, generic, L1)"),
            (0x0400, "0x0400 (internal timer error)"),
            (
                0x0800 | 0x100,
                "0x0900 (bus/interconnect, originated, generic error, memory, L0, timeout)",
            ),
        ];
        for (code, text) in cases {
            assert_eq!(Mcacod(code).to_string(), text, "code {code:#x}");
        }
    }

    #[test]
    fn the_filter_bit_does_not_change_the_class() {
        assert!(Mcacod(0x1134).is_data_load());
        assert!(Mcacod(0x10C3).is_memory_scrub());
        assert_eq!(Mcacod(0x117A).class(), Mcacod(0x017A).class());
        assert!(!Mcacod(0x0135).is_data_load());
    }
}
