//! Machine-check events for the management plane: one structured [`Event`] per decision,
//! and a fixed-capacity [`EventQueue`] the hypervisor fills from its injection path and
//! drains when it likes.
//!
//! # Background
//! vmce decides everything an operator needs to know about a host error — reflected or not,
//! to whom, with what outcome on each vCPU — and returns it as an [`InjectionReport`] or an
//! error. An [`Event`] is that decision as a value a management plane can log, count and
//! ship: it [`Display`](fmt::Display)s as one mcelog-style line (register names in capitals,
//! values in hex without `0x`, then `key=value` words) and serializes with serde (postcard
//! for the wire).
//!
//! The vocabulary of a memory failure is QEMU's QMP `MEMORY_FAILURE` event, so a management
//! plane that already understands QEMU understands these ([`Event::memory_failure`]):
//!
//! | vmce decision | recipient | action | flags |
//! |---|---|---|---|
//! | reflected, every vCPU that is up took it | guest | inject | action-required as delivered; recursive with `OVER` |
//! | reflected, some vCPU that is up could not take it | guest | reset | recursive when a vCPU still had `MCIP` |
//! | reflected, no vCPU up (broken-frame list only) | guest | ignore | |
//! | [`Event::Shutdown`] | guest | reset | recursive when `MCIP` was still set |
//! | not reflected, host only or not owned | hypervisor | ignore | action-required from `AR` |
//! | not reflected, fatal | hypervisor | fatal | recursive for an overflow |
//!
//! Records ([`Event::RecordRefused`], [`Event::RecordLossy`]) are not memory failures and
//! have no such triple.
//!
//! Events carry their own flat, `Copy` vocabulary ([`ErrorClass`], [`NotReflectedReason`],
//! ...), converted from the crate's types, so that the serialized form of an event does not
//! change when an internal error enum grows a field.
//!
//! # The queues
//! Two, both fixed-capacity and allocation-free, both never blocking and counting what they
//! had no room for:
//! - [`EventRing`], split into one [`EventProducer`] and one [`EventConsumer`]
//!   (`heapless::spsc`): the injection-path queue. A push is a copy and two plain atomic
//!   stores, no read-modify-write, so it adds little to an injection; give each physical CPU
//!   that injects its own ring (as Linux keeps its machine-check log per CPU) and drain them
//!   all from one place.
//! - [`EventQueue`], shared by any number of producers and consumers, at the price of a
//!   compare-and-swap per push.
//!
//! [`EventQueue`] is a lock-free bounded multi-producer multi-consumer queue
//! (`heapless::mpmc`): [`EventQueue::push`] never blocks and never allocates, so it may be
//! called right after [`crate::Domain::inject`] on the injection path (not from the host
//! #MC handler itself, like `inject`); when the queue is full the event is counted in
//! [`EventQueue::dropped`] instead of being lost silently. `heapless` deprecates that
//! queue's constructor because an enqueue or dequeue can fail spuriously when a thread is
//! preempted in the middle of one for a whole lap of the ring (heapless issue 583): here a
//! failed push is counted as dropped, and a failed pop returns `None` until the slow producer
//! finishes, so neither loses an event silently.
//!
//! Floor: events, above delivery, reflection, classification and records (it reads their
//! results; none of them knows of events).

use crate::address::TranslateError;
use crate::classify::{FatalReason, HostOnlyReason, ReflectClass};
use crate::delivery::{DeliveryMode, DowngradeReason, InjectionReport, ShutdownReason};
use crate::host::HostBank;
use crate::record::{Encoding, RecordError, StateFields};
use crate::reflect::{GuestMce, NotReflected};
use crate::registers::MciStatus;
use crate::state::VcpuId;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use serde::{Deserialize, Serialize};

/// Who a memory failure is for (QMP `MemoryFailureRecipient`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Recipient {
    /// The hypervisor (host) keeps it: no guest sees it.
    Hypervisor,
    /// The guest that owns the memory.
    Guest,
}

/// What was done about a memory failure (QMP `MemoryFailureAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Nothing for a guest to do: the host logs it (or no vCPU could be told).
    Ignore,
    /// A virtual #MC was injected.
    Inject,
    /// Unrecoverable for the host context: the hypervisor must treat it as fatal.
    Fatal,
    /// Unrecoverable but confined to the guest: the domain must be shut down or reset.
    Reset,
}

/// The flags of a memory failure (QMP `MemoryFailureFlags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flags {
    /// Action-required (the consumer must act before it runs on) rather than
    /// action-optional.
    pub action_required: bool,
    /// It arrived while a previous machine check was still being handled (`MCIP` still set,
    /// or `OVER`).
    pub recursive: bool,
}

/// The QMP `MEMORY_FAILURE` view of an event: recipient, action and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoryFailure {
    /// Who it is for.
    pub recipient: Recipient,
    /// What was done.
    pub action: Action,
    /// Action-required, recursive.
    pub flags: Flags,
}

/// The class of a reflected error ([`ReflectClass`], as an event carries it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Intel SRAO, memory scrub.
    SraoMemoryScrub,
    /// Intel SRAO, L3 explicit write-back.
    SraoL3Writeback,
    /// Intel SRAR, data load.
    SrarDataLoad,
    /// Intel SRAR, instruction fetch.
    SrarInstructionFetch,
    /// AMD uncorrected, context-recoverable.
    AmdUncorrected,
}

impl From<ReflectClass> for ErrorClass {
    fn from(class: ReflectClass) -> Self {
        match class {
            ReflectClass::SraoMemoryScrub => ErrorClass::SraoMemoryScrub,
            ReflectClass::SraoL3Writeback => ErrorClass::SraoL3Writeback,
            ReflectClass::SrarDataLoad => ErrorClass::SrarDataLoad,
            ReflectClass::SrarInstructionFetch => ErrorClass::SrarInstructionFetch,
            ReflectClass::AmdUncorrected => ErrorClass::AmdUncorrected,
        }
    }
}

impl ErrorClass {
    /// Whether the class is action-required (SRAR, AMD).
    pub const fn action_required(self) -> bool {
        !matches!(
            self,
            ErrorClass::SraoMemoryScrub | ErrorClass::SraoL3Writeback
        )
    }

    const fn token(self) -> &'static str {
        match self {
            ErrorClass::SraoMemoryScrub => "srao-memory-scrub",
            ErrorClass::SraoL3Writeback => "srao-l3-writeback",
            ErrorClass::SrarDataLoad => "srar-data-load",
            ErrorClass::SrarInstructionFetch => "srar-instruction-fetch",
            ErrorClass::AmdUncorrected => "amd-uncorrected",
        }
    }
}

/// How a reflected error was delivered ([`DeliveryMode`], as an event carries it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Mode {
    /// Every vCPU that is up (Intel).
    Broadcast,
    /// One vCPU, `LMCE_S` (Intel LMCE).
    Local,
    /// One vCPU (AMD).
    Single,
}

impl From<DeliveryMode> for Mode {
    fn from(mode: DeliveryMode) -> Self {
        match mode {
            DeliveryMode::Broadcast => Mode::Broadcast,
            DeliveryMode::Local => Mode::Local,
            DeliveryMode::Single => Mode::Single,
        }
    }
}

impl Mode {
    const fn token(self) -> &'static str {
        match self {
            Mode::Broadcast => "broadcast",
            Mode::Local => "local",
            Mode::Single => "single",
        }
    }
}

/// Why a vCPU that is up could not take a #MC ([`ShutdownReason`], as an event carries it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShutdownCause {
    /// `MCG_STATUS.MCIP` was still set.
    MachineCheckInProgress,
    /// `CR4.MCE` was clear.
    MachineCheckDisabled,
}

impl From<ShutdownReason> for ShutdownCause {
    fn from(reason: ShutdownReason) -> Self {
        match reason {
            ShutdownReason::MachineCheckInProgress => ShutdownCause::MachineCheckInProgress,
            ShutdownReason::MachineCheckDisabled => ShutdownCause::MachineCheckDisabled,
        }
    }
}

impl ShutdownCause {
    const fn token(self) -> &'static str {
        match self {
            ShutdownCause::MachineCheckInProgress => "mcip",
            ShutdownCause::MachineCheckDisabled => "cr4-mce-clear",
        }
    }
}

/// Why an action-required error was delivered as action-optional ([`DowngradeReason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Downgrade {
    /// No vCPU of the domain was named as the consumer.
    NoConsumer,
    /// The consumer named (this vCPU) is not up.
    ConsumerNotUp {
        /// The vCPU named as consumer.
        vcpu: u32,
    },
}

impl From<DowngradeReason> for Downgrade {
    fn from(reason: DowngradeReason) -> Self {
        match reason {
            DowngradeReason::NoConsumer => Downgrade::NoConsumer,
            DowngradeReason::ConsumerNotUp(VcpuId(vcpu)) => Downgrade::ConsumerNotUp { vcpu },
        }
    }
}

/// Why a host error was not reflected ([`NotReflected`], flattened).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NotReflectedReason {
    /// Host only: `VAL` clear.
    NotValid,
    /// Host only: a corrected error.
    Corrected,
    /// Host only: Intel UCNA.
    Ucna,
    /// Host only: AMD deferred.
    Deferred,
    /// Host only: an action-optional error of a kind vmce does not reflect.
    UnrecognizedActionOptional,
    /// Host only: an action-optional error without a physical address.
    NoPhysicalAddress,
    /// Host only: an action-optional error in a region larger than a page.
    AddressCoarserThanPage {
        /// `MCi_MISC` address LSB.
        lsb: u8,
    },
    /// The domain does not own this host frame.
    NotOwned {
        /// The host frame number.
        host_frame: u64,
    },
    /// The translation gave a guest frame beyond the physical address space.
    TranslationOutOfRange {
        /// The guest frame number the translation gave.
        guest_frame: u64,
    },
    /// Fatal: processor context corrupt.
    ProcessorContextCorrupt,
    /// Fatal: an action-required error overflowed.
    Overflow,
    /// Fatal: neither `RIPV` nor `EIPV`.
    NoRestartIp,
    /// Fatal: uncorrected on an Intel host without `SER_P`.
    NoRecoveryArchitecture,
    /// Fatal: an action-required error of an unknown kind.
    UnrecognizedActionRequired,
    /// Fatal: an action-required error without a physical address.
    ActionRequiredWithoutAddress,
    /// Fatal: an action-required error in a region larger than a page.
    ActionRequiredAddressCoarserThanPage {
        /// `MCi_MISC` address LSB.
        lsb: u8,
    },
}

impl From<NotReflected> for NotReflectedReason {
    fn from(why: NotReflected) -> Self {
        use NotReflectedReason as R;
        match why {
            NotReflected::HostOnly(reason) => match reason {
                HostOnlyReason::NotValid => R::NotValid,
                HostOnlyReason::Corrected => R::Corrected,
                HostOnlyReason::Ucna => R::Ucna,
                HostOnlyReason::Deferred => R::Deferred,
                HostOnlyReason::UnrecognizedActionOptional => R::UnrecognizedActionOptional,
                HostOnlyReason::NoPhysicalAddress => R::NoPhysicalAddress,
                HostOnlyReason::AddressCoarserThanPage { lsb } => R::AddressCoarserThanPage { lsb },
            },
            NotReflected::Fatal(reason) => match reason {
                FatalReason::ProcessorContextCorrupt => R::ProcessorContextCorrupt,
                FatalReason::Overflow => R::Overflow,
                FatalReason::NoRestartIp => R::NoRestartIp,
                FatalReason::NoRecoveryArchitecture => R::NoRecoveryArchitecture,
                FatalReason::UnrecognizedActionRequired => R::UnrecognizedActionRequired,
                FatalReason::ActionRequiredWithoutAddress => R::ActionRequiredWithoutAddress,
                FatalReason::ActionRequiredAddressCoarserThanPage { lsb } => {
                    R::ActionRequiredAddressCoarserThanPage { lsb }
                }
            },
            NotReflected::Translate(TranslateError::NotOwned(frame)) => R::NotOwned {
                host_frame: frame.0,
            },
            NotReflected::Translate(TranslateError::OutOfRange(frame)) => {
                R::TranslationOutOfRange {
                    guest_frame: frame.0,
                }
            }
        }
    }
}

impl NotReflectedReason {
    /// Whether the host must treat the error as fatal for the affected context.
    pub const fn fatal(self) -> bool {
        use NotReflectedReason as R;
        matches!(
            self,
            R::ProcessorContextCorrupt
                | R::Overflow
                | R::NoRestartIp
                | R::NoRecoveryArchitecture
                | R::UnrecognizedActionRequired
                | R::ActionRequiredWithoutAddress
                | R::ActionRequiredAddressCoarserThanPage { .. }
        )
    }
}

impl fmt::Display for NotReflectedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NotReflectedReason as R;
        f.write_str(match self {
            R::NotValid => "not-valid",
            R::Corrected => "corrected",
            R::Ucna => "ucna",
            R::Deferred => "deferred",
            R::UnrecognizedActionOptional => "unrecognized-action-optional",
            R::NoPhysicalAddress => "no-physical-address",
            R::AddressCoarserThanPage { lsb } => {
                return write!(f, "address-coarser-than-page lsb={lsb}");
            }
            R::NotOwned { host_frame } => return write!(f, "not-owned hframe={host_frame:x}"),
            R::TranslationOutOfRange { guest_frame } => {
                return write!(f, "translation-out-of-range gframe={guest_frame:x}");
            }
            R::ProcessorContextCorrupt => "fatal-pcc",
            R::Overflow => "fatal-overflow",
            R::NoRestartIp => "fatal-no-restart-ip",
            R::NoRecoveryArchitecture => "fatal-no-ser",
            R::UnrecognizedActionRequired => "fatal-unrecognized-action-required",
            R::ActionRequiredWithoutAddress => "fatal-action-required-without-address",
            R::ActionRequiredAddressCoarserThanPage { lsb } => {
                return write!(f, "fatal-address-coarser-than-page lsb={lsb}");
            }
        })
    }
}

/// Why a record was refused ([`RecordError`], by kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecordRefusal {
    /// The bytes end before the record does.
    Truncated {
        /// Bytes the record needs.
        needed: u64,
        /// Bytes there were.
        available: u64,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: u64,
    },
    /// The format cannot carry this state ([`StateFields`] bits).
    WouldLose {
        /// What would have been lost, as [`StateFields`] bits.
        fields: u16,
    },
    /// The vCPU state cannot be held under the destination profile.
    State,
    /// The record does not fit the destination domain.
    Restore,
    /// A malformed or refused Xen record or HVM context stream.
    Hvm,
    /// A malformed or refused native record.
    Native,
}

impl From<RecordError> for RecordRefusal {
    fn from(error: RecordError) -> Self {
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        match error {
            RecordError::Truncated { needed, available } => RecordRefusal::Truncated {
                needed: wide(needed),
                available: wide(available),
            },
            RecordError::BufferTooSmall { needed } => RecordRefusal::BufferTooSmall {
                needed: wide(needed),
            },
            RecordError::WouldLose { fields } => RecordRefusal::WouldLose {
                fields: fields.bits(),
            },
            RecordError::State(_) => RecordRefusal::State,
            RecordError::Restore(_) => RecordRefusal::Restore,
            RecordError::Hvm(_) => RecordRefusal::Hvm,
            RecordError::Native(_) => RecordRefusal::Native,
        }
    }
}

impl fmt::Display for RecordRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordRefusal::Truncated { needed, available } => {
                write!(f, "truncated needed={needed} available={available}")
            }
            RecordRefusal::BufferTooSmall { needed } => {
                write!(f, "buffer-too-small needed={needed}")
            }
            RecordRefusal::WouldLose { fields } => write!(
                f,
                "would-lose fields=\"{}\"",
                StateFields::from_bits_retain(*fields)
            ),
            RecordRefusal::State => f.write_str("state"),
            RecordRefusal::Restore => f.write_str("restore"),
            RecordRefusal::Hvm => f.write_str("hvm"),
            RecordRefusal::Native => f.write_str("native"),
        }
    }
}

/// A host error reflected into a guest: the error and every vCPU's outcome, summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reflected {
    /// The owning domain, when the caller named it.
    pub domain: Option<u32>,
    /// The class of the host error (before any [`Reflected::downgraded`]).
    pub class: ErrorClass,
    /// The host's `MCi_STATUS` (with its `MSCOD`).
    pub status: u64,
    /// The host's `MCG_STATUS`.
    pub mcg_status: u64,
    /// The host-physical address (0 for a broken-frame access).
    pub host_addr: u64,
    /// The guest-physical address.
    pub guest_addr: u64,
    /// `MCi_MISC`.
    pub misc: u64,
    /// How it was delivered.
    pub mode: Mode,
    /// The vCPU whose bank 1 holds the error, if any took it.
    pub data_vcpu: Option<u32>,
    /// vCPUs that took a #MC with `MCIP|RIPV` only (bank 1 empty).
    pub signal_only: u32,
    /// vCPUs that were not up and were skipped.
    pub skipped: u32,
    /// vCPUs that were up but could not take it: the domain must shut down.
    pub shutdown: u32,
    /// The first of those, and why.
    pub first_shutdown: Option<(u32, ShutdownCause)>,
    /// The data vCPU's bank 1 still held a valid error (`OVER` set).
    pub overflow: bool,
    /// Delivered as action-optional, and why.
    pub downgraded: Option<Downgrade>,
}

/// A host error not reflected into any guest, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NotReflectedEvent {
    /// The domain the caller asked about, when it named one.
    pub domain: Option<u32>,
    /// The host bank number.
    pub bank: u8,
    /// The host's `MCi_STATUS`.
    pub status: u64,
    /// The host's `MCi_ADDR`.
    pub addr: u64,
    /// The host's `MCi_MISC`.
    pub misc: u64,
    /// Why no guest sees it.
    pub reason: NotReflectedReason,
}

/// A domain that must be shut down because a vCPU that is up could not take a #MC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Shutdown {
    /// The domain, when the caller named it.
    pub domain: Option<u32>,
    /// The first vCPU that could not take it.
    pub vcpu: u32,
    /// Why.
    pub cause: ShutdownCause,
    /// How many vCPUs could not take it.
    pub vcpus: u32,
}

/// A record save or restore that was refused, or a save that dropped state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordEvent<T> {
    /// The domain, when the caller named it.
    pub domain: Option<u32>,
    /// The vCPU whose record it was, when it was one vCPU's.
    pub vcpu: Option<u32>,
    /// The refusal ([`RecordRefusal`]) or what was dropped ([`StateFields`] bits).
    pub detail: T,
}

/// One decision vmce made, for the management plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// A host error was reflected into a guest.
    Reflected(Reflected),
    /// A host error was not reflected.
    NotReflected(NotReflectedEvent),
    /// A domain must shut down (some vCPU could not take a #MC).
    Shutdown(Shutdown),
    /// A record was refused: nothing was written or restored.
    RecordRefused(RecordEvent<RecordRefusal>),
    /// A record was saved under `LossPolicy::Allow` and dropped state ([`StateFields`] bits).
    RecordLossy(RecordEvent<u16>),
}

impl Event {
    /// The event for an injection: `error` as given to [`crate::Domain::inject`], `report` as
    /// it returned, `domain` the owner's id if the caller has one.
    pub fn from_report(domain: Option<u32>, report: &InjectionReport, error: &GuestMce) -> Event {
        let with_data = u32::from(report.data_vcpu.is_some() && report.delivered != 0);
        Event::Reflected(Reflected {
            domain,
            class: error.class.into(),
            status: error.host_status.bits(),
            mcg_status: error.host_mcg_status.bits(),
            host_addr: error.host_addr.0,
            guest_addr: error.guest_addr.0,
            misc: error.misc.0,
            mode: report.mode.into(),
            data_vcpu: report.data_vcpu.map(|id| id.0),
            signal_only: report.delivered.saturating_sub(with_data),
            skipped: report.skipped,
            shutdown: report.shutdown,
            first_shutdown: report
                .first_shutdown
                .map(|(id, reason)| (id.0, reason.into())),
            overflow: report.overflow,
            downgraded: report.downgraded.map(Into::into),
        })
    }

    /// The [`Event::Shutdown`] an injection calls for, or `None` when every vCPU that is up
    /// took it.
    pub fn shutdown_from_report(domain: Option<u32>, report: &InjectionReport) -> Option<Event> {
        let (vcpu, reason) = report.first_shutdown?;
        Some(Event::Shutdown(Shutdown {
            domain,
            vcpu: vcpu.0,
            cause: reason.into(),
            vcpus: report.shutdown,
        }))
    }

    /// The event for a host bank that is not reflected into `domain`, and why.
    pub fn not_reflected(domain: Option<u32>, bank: &HostBank, why: NotReflected) -> Event {
        Event::NotReflected(NotReflectedEvent {
            domain,
            bank: bank.bank,
            status: bank.status.bits(),
            addr: bank.addr,
            misc: bank.misc.0,
            reason: why.into(),
        })
    }

    /// The event for a refused record save or restore.
    pub fn record_refused(domain: Option<u32>, vcpu: Option<VcpuId>, error: RecordError) -> Event {
        Event::RecordRefused(RecordEvent {
            domain,
            vcpu: vcpu.map(|id| id.0),
            detail: error.into(),
        })
    }

    /// The event for a save that dropped state, or `None` when `encoding` dropped nothing.
    pub fn record_saved_lossily(
        domain: Option<u32>,
        vcpu: Option<VcpuId>,
        encoding: &Encoding,
    ) -> Option<Event> {
        if encoding.dropped.is_empty() {
            return None;
        }
        Some(Event::RecordLossy(RecordEvent {
            domain,
            vcpu: vcpu.map(|id| id.0),
            detail: encoding.dropped.bits(),
        }))
    }

    /// The QMP `MEMORY_FAILURE` view of the event (see the module docs), or `None` for a
    /// record event.
    pub fn memory_failure(&self) -> Option<MemoryFailure> {
        match self {
            Event::Reflected(event) => {
                let action = if event.shutdown != 0 {
                    Action::Reset
                } else if event.data_vcpu.is_some() || event.signal_only != 0 {
                    Action::Inject
                } else {
                    Action::Ignore
                };
                let mcip = matches!(
                    event.first_shutdown,
                    Some((_, ShutdownCause::MachineCheckInProgress))
                );
                Some(MemoryFailure {
                    recipient: Recipient::Guest,
                    action,
                    flags: Flags {
                        action_required: event.class.action_required()
                            && event.downgraded.is_none(),
                        recursive: event.overflow || mcip,
                    },
                })
            }
            Event::NotReflected(event) => Some(MemoryFailure {
                recipient: Recipient::Hypervisor,
                action: if event.reason.fatal() {
                    Action::Fatal
                } else {
                    Action::Ignore
                },
                flags: Flags {
                    action_required: MciStatus::from_bits_retain(event.status)
                        .contains(MciStatus::AR)
                        || matches!(
                            event.reason,
                            NotReflectedReason::ActionRequiredWithoutAddress
                                | NotReflectedReason::ActionRequiredAddressCoarserThanPage { .. }
                                | NotReflectedReason::UnrecognizedActionRequired
                        ),
                    recursive: event.reason == NotReflectedReason::Overflow,
                },
            }),
            Event::Shutdown(event) => Some(MemoryFailure {
                recipient: Recipient::Guest,
                action: Action::Reset,
                flags: Flags {
                    action_required: false,
                    recursive: event.cause == ShutdownCause::MachineCheckInProgress,
                },
            }),
            Event::RecordRefused(_) | Event::RecordLossy(_) => None,
        }
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recipient::Hypervisor => "hypervisor",
            Recipient::Guest => "guest",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Ignore => "ignore",
            Action::Inject => "inject",
            Action::Fatal => "fatal",
            Action::Reset => "reset",
        })
    }
}

impl fmt::Display for MemoryFailure {
    /// `recipient=… action=… flags=…` (flags `action-required`, `recursive`, comma-joined,
    /// or `none`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recipient={} action={} flags=",
            self.recipient, self.action
        )?;
        match (self.flags.action_required, self.flags.recursive) {
            (true, true) => f.write_str("action-required,recursive"),
            (true, false) => f.write_str("action-required"),
            (false, true) => f.write_str("recursive"),
            (false, false) => f.write_str("none"),
        }
    }
}

/// `" domain=N"`, or nothing.
struct DomainWord(Option<u32>);

impl fmt::Display for DomainWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " domain={id}"),
            None => Ok(()),
        }
    }
}

/// `" vcpu=N"`, or nothing.
struct VcpuWord(Option<u32>);

impl fmt::Display for VcpuWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " vcpu={id}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Event {
    /// One line, mcelog style: `vmce: <kind> domain=… <registers> <key=value…>`, then the
    /// QMP-style recipient, action and flags for a memory failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Reflected(event) => {
                write!(
                    f,
                    "vmce: reflected{} class={} STATUS {:x} MCGSTATUS {:x} ADDR {:x} GADDR {:x} MISC {:x} mode={}",
                    DomainWord(event.domain),
                    event.class.token(),
                    event.status,
                    event.mcg_status,
                    event.host_addr,
                    event.guest_addr,
                    event.misc,
                    event.mode.token(),
                )?;
                match event.data_vcpu {
                    Some(vcpu) => write!(f, " data=vcpu{vcpu}")?,
                    None => f.write_str(" data=none")?,
                }
                write!(
                    f,
                    " mcip-ripv={} skipped={} shutdown={}",
                    event.signal_only, event.skipped, event.shutdown
                )?;
                if let Some((vcpu, cause)) = event.first_shutdown {
                    write!(f, " first-shutdown=vcpu{vcpu}:{}", cause.token())?;
                }
                if event.overflow {
                    f.write_str(" OVER")?;
                }
                match event.downgraded {
                    Some(Downgrade::NoConsumer) => f.write_str(" downgraded=no-consumer")?,
                    Some(Downgrade::ConsumerNotUp { vcpu }) => {
                        write!(f, " downgraded=consumer-vcpu{vcpu}-not-up")?;
                    }
                    None => {}
                }
            }
            Event::NotReflected(event) => write!(
                f,
                "vmce: not-reflected{} BANK {} STATUS {:x} ADDR {:x} MISC {:x} why={}",
                DomainWord(event.domain),
                event.bank,
                event.status,
                event.addr,
                event.misc,
                event.reason,
            )?,
            Event::Shutdown(event) => write!(
                f,
                "vmce: shutdown{} vcpu={} cause={} vcpus={}",
                DomainWord(event.domain),
                event.vcpu,
                event.cause.token(),
                event.vcpus,
            )?,
            Event::RecordRefused(event) => write!(
                f,
                "vmce: record-refused{}{} why={}",
                DomainWord(event.domain),
                VcpuWord(event.vcpu),
                event.detail,
            )?,
            Event::RecordLossy(event) => write!(
                f,
                "vmce: record-lossy{}{} dropped=\"{}\"",
                DomainWord(event.domain),
                VcpuWord(event.vcpu),
                StateFields::from_bits_retain(event.detail),
            )?,
        }
        if let Some(failure) = self.memory_failure() {
            write!(f, " {failure}")?;
        }
        Ok(())
    }
}

/// A fixed-capacity, allocation-free, lock-free queue of [`Event`]s with a counter of the
/// events it had no room for.
///
/// `N` is the capacity: a power of two, at least 2 and below 255 (checked when the queue is
/// built; heapless's `mpmc` ring). Any number of threads may [`push`](EventQueue::push) and
/// [`pop`](EventQueue::pop) at once through a shared reference; neither ever blocks.
pub struct EventQueue<const N: usize> {
    queue: heapless::mpmc::Queue<Event, N>,
    dropped: AtomicU64,
}

impl<const N: usize> EventQueue<N> {
    /// An empty queue (usable in a `static`).
    #[allow(deprecated)] // heapless issue 583: a spurious failure is counted, see the module docs.
    pub const fn new() -> Self {
        EventQueue {
            queue: heapless::mpmc::Queue::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// How many events the queue holds at most.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Adds `event` at the end, without blocking. Returns `false`, and counts the event in
    /// [`EventQueue::dropped`], when there is no room.
    #[inline]
    pub fn push(&self, event: Event) -> bool {
        let stored = self.queue.enqueue(event).is_ok();
        if !stored {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        stored
    }

    /// Pushes the events of one injection: [`Event::from_report`], then
    /// [`Event::shutdown_from_report`] when the domain must shut down. Returns how many the
    /// queue took.
    #[inline]
    pub fn push_injection(
        &self,
        domain: Option<u32>,
        report: &InjectionReport,
        error: &GuestMce,
    ) -> u32 {
        let mut stored = u32::from(self.push(Event::from_report(domain, report, error)));
        if let Some(shutdown) = Event::shutdown_from_report(domain, report) {
            stored = stored.saturating_add(u32::from(self.push(shutdown)));
        }
        stored
    }

    /// Takes the oldest event, or `None` when the queue is empty.
    #[inline]
    pub fn pop(&self) -> Option<Event> {
        self.queue.dequeue()
    }

    /// Every event the queue holds now, oldest first (ends when the queue is empty).
    pub fn drain(&self) -> impl Iterator<Item = Event> + '_ {
        core::iter::from_fn(|| self.pop())
    }

    /// Events that did not fit since the queue was built (or since
    /// [`EventQueue::take_dropped`]).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// [`EventQueue::dropped`], and resets it to zero.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// A fixed-capacity, allocation-free single-producer single-consumer ring of [`Event`]s: the
/// cheapest way to record events on the injection path (see the module docs). It holds
/// `N - 1` events; [`EventRing::split`] gives its two ends.
pub struct EventRing<const N: usize> {
    ring: heapless::spsc::Queue<Event, N>,
    dropped: AtomicU64,
}

impl<const N: usize> EventRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        EventRing {
            ring: heapless::spsc::Queue::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// How many events the ring holds at most (`N - 1`).
    pub const fn capacity(&self) -> usize {
        N.saturating_sub(1)
    }

    /// The producing end (for the one CPU that injects) and the consuming end (for whoever
    /// drains); each may move to its own thread.
    pub fn split(&mut self) -> (EventProducer<'_>, EventConsumer<'_>) {
        let (producer, consumer) = self.ring.split();
        (
            EventProducer {
                producer,
                dropped: &self.dropped,
            },
            EventConsumer {
                consumer,
                dropped: &self.dropped,
                seen: 0,
            },
        )
    }
}

impl<const N: usize> Default for EventRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The producing end of an [`EventRing`].
pub struct EventProducer<'a> {
    producer: heapless::spsc::Producer<'a, Event>,
    /// Written by this end only (a load and a store, no read-modify-write).
    dropped: &'a AtomicU64,
}

impl EventProducer<'_> {
    /// Adds `event` at the end, without blocking. Returns `false`, and counts the event in
    /// [`EventConsumer::dropped`], when the ring is full.
    #[inline]
    pub fn push(&mut self, event: Event) -> bool {
        let stored = self.producer.enqueue(event).is_ok();
        if !stored {
            // The only writer of the counter: no update can be lost between load and store.
            let count = self.dropped.load(Ordering::Relaxed);
            self.dropped.store(count.wrapping_add(1), Ordering::Relaxed);
        }
        stored
    }

    /// [`EventQueue::push_injection`] for this ring: the [`Event::from_report`], then the
    /// [`Event::shutdown_from_report`] when there is one. Returns how many the ring took.
    #[inline]
    pub fn push_injection(
        &mut self,
        domain: Option<u32>,
        report: &InjectionReport,
        error: &GuestMce,
    ) -> u32 {
        let mut stored = u32::from(self.push(Event::from_report(domain, report, error)));
        if let Some(shutdown) = Event::shutdown_from_report(domain, report) {
            stored = stored.saturating_add(u32::from(self.push(shutdown)));
        }
        stored
    }
}

/// The consuming end of an [`EventRing`].
pub struct EventConsumer<'a> {
    consumer: heapless::spsc::Consumer<'a, Event>,
    dropped: &'a AtomicU64,
    /// [`EventConsumer::dropped`] at the last [`EventConsumer::take_dropped`].
    seen: u64,
}

impl EventConsumer<'_> {
    /// Takes the oldest event, or `None` when the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<Event> {
        self.consumer.dequeue()
    }

    /// Every event the ring holds now, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Event> + '_ {
        core::iter::from_fn(|| self.pop())
    }

    /// Events the ring had no room for since it was built.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events the ring had no room for since the last call (the counter itself belongs to
    /// the producer and is never reset).
    pub fn take_dropped(&mut self) -> u64 {
        let total = self.dropped();
        let new = total.wrapping_sub(self.seen);
        self.seen = total;
        new
    }
}

impl fmt::Debug for EventProducer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventProducer")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EventConsumer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventConsumer")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl<const N: usize> fmt::Debug for EventRing<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRing")
            .field("capacity", &self.capacity())
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<const N: usize> Default for EventQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for EventQueue<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue")
            .field("capacity", &N)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}
