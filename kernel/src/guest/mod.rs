//! The guests: ring-3 programs in the `.guest` sections of the kernel image.
//!
//! One guest context runs per CPU (vCPU `n` on CPU `n`; [`Scenario::vcpus`] may leave the
//! last CPU without one), all sharing this code and the guest data below, like the vCPUs of
//! one SMP guest. A guest only reaches the kernel through `int 0x80` hypercalls and through
//! the faults of privileged instructions: `rdmsr`/`wrmsr` at CPL 3 raise #GP, which the
//! kernel emulates.
//!
//! Only the `.guest` pages are user-accessible, so guest code must never call into kernel
//! text or read kernel data: every function here is `#[inline(always)]` or placed in
//! `.guest.text`, string constants live in `.guest.rodata` ([`guest_text!`]), there is no
//! `core::fmt`, no panicking index and no slice comparison (which could call `memcmp`).
//! A slip shows up as a guest page fault (`GUEST CRASH ... exception 14`).

use crate::hypercall::nr;
use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Guest-side vCPU limit (a power of two, so `& (N - 1)` indexes without a bounds check).
const GUEST_MAX_VCPUS: usize = 8;
const MCG_CAP: u32 = 0x179;
const MCG_STATUS: u32 = 0x17A;
const MC0_CTL: u32 = 0x400;
const MCI_STATUS_VAL: u64 = 1 << 63;
const MCI_STATUS_UC: u64 = 1 << 61;
const MCI_STATUS_MISCV: u64 = 1 << 59;
const MCI_STATUS_ADDRV: u64 = 1 << 58;
/// `MCi_STATUS.AR`: action required (the interrupted instruction consumed the error).
const MCI_STATUS_AR: u64 = 1 << 55;
const MC1_CTL2: u32 = 0x281;
/// `MCi_CTL2.CMCI_EN`.
const CTL2_CMCI_EN: u64 = 1 << 30;
/// Where guest-physical 0 appears in the guests' (identity-mapped) address space.
const GUEST_RAM_BASE: u64 = crate::paging::GUEST_RAM_HOST_FRAME << 12;
/// How long (TSC ticks, about 2 s under QEMU TCG, whose TSC runs at the host's rate) a vCPU
/// of a scenario that tests the timeout ([`MCE_RENDEZVOUS_TIMES_OUT`]) waits for the others
/// in the machine-check rendezvous before declaring a guest panic.
const RENDEZVOUS_TIMEOUT: u64 = 5_000_000_000;

/// A byte-string constant placed in guest-readable memory.
macro_rules! guest_text {
    ($text:literal) => {{
        #[unsafe(link_section = ".guest.rodata")]
        static TEXT: [u8; $text.len()] = *$text;
        &TEXT
    }};
}

// ---- Guest memory shared by all vCPUs ------------------------------------------------------

#[unsafe(link_section = ".guest.data")]
static NR_VCPUS: AtomicU32 = AtomicU32::new(0);
/// Arrivals at the machine-check rendezvous, over all rounds.
#[unsafe(link_section = ".guest.data")]
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// vCPUs the guest took offline, which the rendezvous does not wait for. They go offline
/// before any machine check: [`ARRIVED`] counts over all rounds, so the number of vCPUs
/// that arrive each round must not change between rounds.
#[unsafe(link_section = ".guest.data")]
static OFFLINE_VCPUS: AtomicU32 = AtomicU32::new(0);
/// vCPU that deliberately misses the rendezvous (`u32::MAX`: none).
#[unsafe(link_section = ".guest.data")]
static SKIP_RENDEZVOUS: AtomicU32 = AtomicU32::new(u32::MAX);
/// How long the rendezvous waits before the guest panics (TSC ticks); 0, the default: as
/// long as it takes. Only the scenarios about the timeout set it: anywhere else a timeout
/// would make the outcome depend on how fast the host runs the vCPUs, and a rendezvous
/// that never completes is caught by the harness's own deadline.
#[unsafe(link_section = ".guest.data")]
static RENDEZVOUS_TIMEOUT_TICKS: AtomicU64 = AtomicU64::new(0);
/// vCPUs of `mce-busy` (all but vCPU 0) that are spinning in ring 3 and will not enter the
/// kernel again before their machine check.
#[unsafe(link_section = ".guest.data")]
static SPINNING_IN_RING_3: AtomicU32 = AtomicU32::new(0);
/// Machine checks fully handled, per vCPU.
#[unsafe(link_section = ".guest.data")]
static ROUNDS_DONE: [AtomicU32; GUEST_MAX_VCPUS] = [const { AtomicU32::new(0) }; GUEST_MAX_VCPUS];
/// #GP faults received, per vCPU.
#[unsafe(link_section = ".guest.data")]
static GP_COUNT: [AtomicU32; GUEST_MAX_VCPUS] = [const { AtomicU32::new(0) }; GUEST_MAX_VCPUS];
/// Last error seen per vCPU: MCG_STATUS, MCi_STATUS, MCi_ADDR, MCi_MISC.
#[unsafe(link_section = ".guest.data")]
static LAST_ERROR: [[AtomicU64; 4]; GUEST_MAX_VCPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; GUEST_MAX_VCPUS];

/// Machine checks are local (AMD, LMCE): the handler does not rendezvous.
#[unsafe(link_section = ".guest.data")]
static LOCAL_MACHINE_CHECKS: AtomicU32 = AtomicU32::new(0);
/// Machine checks fully handled by any vCPU.
#[unsafe(link_section = ".guest.data")]
static HANDLED_ANYWHERE: AtomicU32 = AtomicU32::new(0);
/// Set by vCPU 0 when its part of a scenario is over; the others wait for it.
#[unsafe(link_section = ".guest.data")]
static LEADER_DONE: AtomicU32 = AtomicU32::new(0);
/// Per vCPU, the recovery point of a read that may consume a machine check (0: none): an
/// action-required #MC resumes there instead of at the read, as Linux's machine-check
/// exception-table fixups do.
#[unsafe(link_section = ".guest.data")]
static RECOVERY_RIP: [AtomicU64; GUEST_MAX_VCPUS] = [const { AtomicU64::new(0) }; GUEST_MAX_VCPUS];
/// Non-zero: an action-required #MC with no recovery point armed is a guest panic, as it is
/// for Linux when the interrupted context cannot be fixed up (kernel or idle).
#[unsafe(link_section = ".guest.data")]
static ACTION_REQUIRED_NEEDS_RECOVERY: AtomicU32 = AtomicU32::new(0);
/// vCPUs that reported their state after a restore (`migrate-dest`).
#[unsafe(link_section = ".guest.data")]
static RESUMED: AtomicU32 = AtomicU32::new(0);
/// The guest-physical address the `migrate-dest` guest reads after the restore (0: none);
/// written by the kernel from the command line before any guest runs.
#[unsafe(link_section = ".guest.data")]
static TOUCH_GUEST_PHYSICAL: AtomicU64 = AtomicU64::new(0);

/// Sets the address the `migrate-dest` guest reads (the kernel side of a boot parameter).
pub fn set_touch_address(guest_physical: u64) {
    TOUCH_GUEST_PHYSICAL.store(guest_physical, Ordering::Release);
}

#[inline(always)]
fn slot(vcpu: u64) -> usize {
    vcpu as usize & (GUEST_MAX_VCPUS - 1)
}

// ---- Guest-side primitives ----------------------------------------------------------------

#[inline(always)]
fn hypercall(number: u64, a0: u64, a1: u64) -> u64 {
    let result;
    // SAFETY: `int 0x80` enters the kernel's hypercall handler, which preserves every
    // register but rax and only reads the guest memory named by the arguments.
    unsafe {
        asm!("int 0x80", inlateout("rax") number => result, in("rdi") a0, in("rsi") a1, options(nostack))
    }
    result
}

#[inline(always)]
fn puts(text: &[u8]) {
    hypercall(nr::PUTS, text.as_ptr() as u64, text.len() as u64);
}

#[inline(always)]
fn put_hex(value: u64) {
    hypercall(nr::PUT_HEX, value, 0);
}

#[inline(always)]
fn put_dec(value: u64) {
    hypercall(nr::PUT_DEC, value, 0);
}

#[inline(always)]
fn end_line() {
    hypercall(nr::END_LINE, 0, 0);
}

/// Sleeps in the kernel until an interrupt (a kick, a machine check) reaches this CPU.
#[inline(always)]
fn block() {
    hypercall(nr::BLOCK, 0, 0);
}

/// Sleeps in the kernel until an interrupt reaches this CPU, unless `cell` no longer holds
/// `value` when the kernel looks (with interrupts off, just before it halts). A machine check
/// that interrupts the guest between its own test of `cell` and this call runs its handler
/// first, and the handler's update of `cell` then stops the sleep, which an unconditional
/// [`block`] would not: its wake-up (the kick) was spent on the handler.
#[inline(always)]
fn block_while(cell: &AtomicU32, value: u32) {
    hypercall(nr::BLOCK, cell as *const AtomicU32 as u64, u64::from(value));
}

#[inline(always)]
fn guest_panic(reason: &[u8]) -> ! {
    // SAFETY: the panic hypercall ends the run and never returns to the guest.
    unsafe {
        asm!("int 0x80", in("rax") nr::PANIC, in("rdi") reason.as_ptr(), in("rsi") reason.len(), options(noreturn))
    }
}

#[inline(always)]
fn trap_return(resume_rip: u64) -> ! {
    // SAFETY: the return-from-trap hypercall replaces this context with the interrupted one.
    unsafe { asm!("int 0x80", in("rax") nr::TRAP_RETURN, in("rdi") resume_rip, options(noreturn)) }
}

/// `rdmsr` as a PV guest executes it: at CPL 3 it faults and the kernel emulates it.
#[inline(always)]
fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: at CPL 3 this traps to the kernel, which emulates it or reflects #GP.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nostack)) }
    (u64::from(high) << 32) | u64::from(low)
}

/// `wrmsr`, trapped and emulated like [`rdmsr`].
#[inline(always)]
fn wrmsr(msr: u32, value: u64) {
    // SAFETY: as for `rdmsr`.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    }
}

#[inline(always)]
fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: rdtsc is allowed at CPL 3 (CR4.TSD is clear) and only reads the counter.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) }
    (u64::from(high) << 32) | u64::from(low)
}

/// Publishes the vCPU count, registers the trap table and says hello.
///
/// The count comes first: a vCPU restored with a pending #MC takes it on its first entry to
/// the kernel (the trap-table hypercall), and the handler's rendezvous needs the count.
#[inline(always)]
fn start(nr_vcpus: u64) {
    NR_VCPUS.store(nr_vcpus as u32, Ordering::Release);
    let machine_check: extern "C" fn(u64, u64, u64, u64) -> ! = on_machine_check;
    let general_protection: extern "C" fn(u64, u64, u64, u64) -> ! = on_general_protection;
    hypercall(
        nr::SET_TRAP_TABLE,
        machine_check as usize as u64,
        general_protection as usize as u64,
    );
    hypercall(nr::HELLO, 0, 0);
}

/// Reads the `u64` at `address`, arming this vCPU's recovery point around the load: when the
/// load consumes a machine check, the handler resumes at the recovery point and this returns
/// `None`.
#[inline(always)]
fn read_recovering(me: usize, address: u64) -> Option<u64> {
    let slot = &RECOVERY_RIP[me] as *const AtomicU64 as *mut u64;
    let value: u64;
    let failed: u64;
    // SAFETY: `slot` is this vCPU's cell of guest data; `address` is in guest RAM, which is
    // mapped (or, for a broken frame, faults into the hypervisor, which raises a machine
    // check whose handler resumes at label 3 with every register as it was at the load).
    unsafe {
        asm!(
            "lea {fixup}, [rip + 3f]",
            "mov qword ptr [{slot}], {fixup}",
            "mov {value}, qword ptr [{address}]",
            "xor {failed:e}, {failed:e}",
            "jmp 4f",
            "3:",
            "mov {failed:e}, 1",
            "xor {value:e}, {value:e}",
            "4:",
            "mov qword ptr [{slot}], 0",
            slot = in(reg) slot,
            address = in(reg) address,
            fixup = out(reg) _,
            value = out(reg) value,
            failed = out(reg) failed,
            options(nostack)
        )
    }
    (failed == 0).then_some(value)
}

#[inline(always)]
fn finish() -> ! {
    hypercall(nr::DONE, 0, 0);
    loop {
        block();
    }
}

// ---- Trap handlers ------------------------------------------------------------------------

/// The guest's machine-check handler, modelled on what Linux does on #MC.
#[unsafe(link_section = ".guest.text")]
extern "C" fn on_machine_check(_vector: u64, _error: u64, _rip: u64, vcpu: u64) -> ! {
    let me = slot(vcpu);
    let mcg_status = rdmsr(MCG_STATUS);
    let bank_count = (rdmsr(MCG_CAP) & 0xFF) as u32;
    let mut valid_banks = 0u32;
    let mut action_required = false;
    for bank in 0..bank_count {
        let status_msr = MC0_CTL + 4 * bank + 1;
        let status = rdmsr(status_msr);
        if status & MCI_STATUS_VAL == 0 {
            continue;
        }
        let addr = if status & MCI_STATUS_ADDRV != 0 {
            rdmsr(status_msr + 1)
        } else {
            0
        };
        let misc = if status & MCI_STATUS_MISCV != 0 {
            rdmsr(status_msr + 2)
        } else {
            0
        };
        valid_banks += 1;
        action_required |= status & MCI_STATUS_AR != 0;
        for (cell, value) in LAST_ERROR[me].iter().zip([mcg_status, status, addr, misc]) {
            cell.store(value, Ordering::Relaxed);
        }
        puts(guest_text!(b"MC mcg_status="));
        put_hex(mcg_status);
        puts(guest_text!(b" bank"));
        put_dec(u64::from(bank));
        puts(guest_text!(b" status="));
        put_hex(status);
        puts(guest_text!(b" addr="));
        put_hex(addr);
        puts(guest_text!(b" misc="));
        put_hex(misc);
        end_line();
        if status & (MCI_STATUS_UC | MCI_STATUS_AR | MCI_STATUS_ADDRV)
            == MCI_STATUS_UC | MCI_STATUS_ADDRV
        {
            puts(guest_text!(b"MC action optional: offlining page "));
            put_hex(addr & !0xFFF);
            end_line();
        }
        wrmsr(status_msr, 0);
    }
    if valid_banks == 0 {
        puts(guest_text!(b"MC mcg_status="));
        put_hex(mcg_status);
        puts(guest_text!(b" no-bank"));
        end_line();
    }

    let round = ROUNDS_DONE[me].load(Ordering::Acquire) + 1;
    if LOCAL_MACHINE_CHECKS.load(Ordering::Acquire) != 0 {
        puts(guest_text!(b"MC local: no rendezvous"));
        end_line();
    } else if SKIP_RENDEZVOUS.load(Ordering::Acquire) == vcpu as u32 {
        puts(guest_text!(b"MC skipping the rendezvous"));
        end_line();
    } else {
        let online = NR_VCPUS
            .load(Ordering::Acquire)
            .wrapping_sub(OFFLINE_VCPUS.load(Ordering::Acquire));
        let everyone = round.wrapping_mul(online);
        ARRIVED.fetch_add(1, Ordering::AcqRel);
        let timeout = RENDEZVOUS_TIMEOUT_TICKS.load(Ordering::Acquire);
        let start = rdtsc();
        while ARRIVED.load(Ordering::Acquire) < everyone {
            if timeout != 0 && rdtsc().wrapping_sub(start) > timeout {
                guest_panic(guest_text!(b"rendezvous-timeout"));
            }
            core::hint::spin_loop();
        }
        puts(guest_text!(b"RENDEZVOUS OK round="));
        put_dec(u64::from(round));
        end_line();
    }

    wrmsr(MCG_STATUS, 0);
    ROUNDS_DONE[me].store(round, Ordering::Release);
    HANDLED_ANYWHERE.fetch_add(1, Ordering::AcqRel);
    puts(guest_text!(b"MC-DONE round="));
    put_dec(u64::from(round));
    puts(guest_text!(b" mcg_status="));
    put_hex(rdmsr(MCG_STATUS));
    end_line();
    if action_required {
        let recovery = RECOVERY_RIP[me].swap(0, Ordering::AcqRel);
        if recovery != 0 {
            puts(guest_text!(
                b"MC action required: resuming at the recovery point"
            ));
            end_line();
            trap_return(recovery)
        }
        if ACTION_REQUIRED_NEEDS_RECOVERY.load(Ordering::Acquire) != 0 {
            guest_panic(guest_text!(b"action-required-without-recovery-point"))
        }
    }
    trap_return(0)
}

/// The guest's #GP handler: counts and reports the fault, then skips the faulting MSR
/// instruction (the only kind this guest expects to fault).
#[unsafe(link_section = ".guest.text")]
extern "C" fn on_general_protection(vector: u64, error: u64, rip: u64, vcpu: u64) -> ! {
    GP_COUNT[slot(vcpu)].fetch_add(1, Ordering::AcqRel);
    puts(guest_text!(b"GP vector="));
    put_dec(vector);
    puts(guest_text!(b" error="));
    put_hex(error);
    puts(guest_text!(b" rip="));
    put_hex(rip);
    end_line();
    // SAFETY: `rip` is the faulting instruction in guest text, readable at CPL 3.
    let (first, second) = unsafe {
        (
            core::ptr::read_volatile(rip as *const u8),
            core::ptr::read_volatile((rip + 1) as *const u8),
        )
    };
    if first == 0x0F && (second == 0x30 || second == 0x32) {
        trap_return(rip + 2)
    }
    guest_panic(guest_text!(b"unexpected-gp"))
}

// ---- Scenario programs (entered with rdi = vCPU, rsi = vCPU count, rdx = parameter) -------

/// `scenario=boot`: start, say hello, finish.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn boot_guest(_vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    finish()
}

/// `mce_guest`'s parameter: bits 0-7 are the rounds to wait for, then flags. With this one the
/// guest spins in ring 3 instead of blocking in the kernel.
const MCE_BUSY: u64 = 1 << 8;
/// With this one the rendezvous gives up after [`RENDEZVOUS_TIMEOUT`] (a guest panic).
const MCE_RENDEZVOUS_TIMES_OUT: u64 = 1 << 9;

/// `scenario=mce` / `mce-twice` / `mce-busy` / `legacy-vcpu0`: wait until this vCPU has
/// handled the given number of machine checks.
///
/// The vCPU sleeps in the kernel ([`block_while`], so a #MC finds its CPU in ring 0, or in
/// ring 3 between two sleeps) or, with [`MCE_BUSY`], spins in ring 3 for good: every vCPU but
/// vCPU 0 counts itself in [`SPINNING_IN_RING_3`] and from then on runs nothing but the spin
/// loop below until its machine check (no hypercall, no fault, and no interrupt is aimed at
/// it before then), and vCPU 0 says so once all have (`VCPU 0 BUSY ...`). That line is what
/// the harness waits for before it raises the #MC on one of them: the #MC then cannot find
/// that CPU anywhere but in ring 3. After its machine check a busy vCPU still sleeps on the
/// count it read before: the window between a guest's test and its sleep, stretched over the
/// whole wait, out of which [`block_while`] must return at once.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn mce_guest(vcpu: u64, nr_vcpus: u64, parameter: u64) -> ! {
    if parameter & MCE_RENDEZVOUS_TIMES_OUT != 0 {
        RENDEZVOUS_TIMEOUT_TICKS.store(RENDEZVOUS_TIMEOUT, Ordering::Release);
    }
    start(nr_vcpus);
    let busy = parameter & MCE_BUSY != 0;
    let rounds = (parameter & 0xFF) as u32;
    let done = &ROUNDS_DONE[slot(vcpu)];
    if busy {
        announce_spinning(vcpu, nr_vcpus);
    }
    loop {
        let seen = done.load(Ordering::Acquire);
        if seen >= rounds {
            break;
        }
        if busy {
            while done.load(Ordering::Acquire) == seen {
                core::hint::spin_loop();
            }
        }
        block_while(done, seen);
    }
    finish()
}

/// `mce-busy`: every vCPU but 0 counts itself as spinning in ring 3; vCPU 0 waits until all
/// have, then reports it.
#[inline(always)]
fn announce_spinning(vcpu: u64, nr_vcpus: u64) {
    if vcpu != 0 {
        SPINNING_IN_RING_3.fetch_add(1, Ordering::AcqRel);
        return;
    }
    while u64::from(SPINNING_IN_RING_3.load(Ordering::Acquire)) + 1 < nr_vcpus {
        core::hint::spin_loop();
    }
    puts(guest_text!(b"BUSY vcpus="));
    put_dec(nr_vcpus - 1);
    puts(guest_text!(
        b" spin in ring 3 and enter the kernel only on a machine check"
    ));
    end_line();
}

/// `scenario=mce-timeout`: like `mce`, but the last vCPU never joins the rendezvous, and the
/// others give up after [`RENDEZVOUS_TIMEOUT`].
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn mce_timeout_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    SKIP_RENDEZVOUS.store(nr_vcpus.wrapping_sub(1) as u32, Ordering::Release);
    mce_guest(vcpu, nr_vcpus, 1 | MCE_RENDEZVOUS_TIMES_OUT)
}

/// `scenario=mcip-held`: like `mce`, but the last vCPU never joins the rendezvous, and the
/// others wait for it without a timeout: they hold `MCIP` until the run ends.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn mcip_held_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    SKIP_RENDEZVOUS.store(nr_vcpus.wrapping_sub(1) as u32, Ordering::Release);
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=held-line`: vCPU 1 has the kernel hold a console line open until a host machine
/// check reaches its CPU (the `hold_line` hypercall); then every vCPU finishes.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn held_line_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    if vcpu == 1 {
        hypercall(nr::HOLD_LINE, 0, 0);
    }
    finish()
}

/// `scenario=offline-vcpu`: the last vCPU starts, then goes offline as an OS takes a CPU
/// down (out of the rendezvous count, `CR4.MCE` cleared, the hypervisor told) and parks for
/// good; the others wait for one machine check like `mce`, rendezvousing the vCPUs online.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn offline_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    if vcpu + 1 != nr_vcpus {
        mce_guest(vcpu, nr_vcpus, 1)
    }
    start(nr_vcpus);
    OFFLINE_VCPUS.fetch_add(1, Ordering::AcqRel);
    hypercall(nr::SET_CR4_MCE, 0, 0);
    hypercall(nr::SET_UP, 0, 0);
    // Its part is over; the run ends when the vCPUs online are done too.
    finish()
}

/// `scenario=srar-unconsumed`: like `mce` on every CPU but the last, which runs no vCPU
/// ([`Scenario::vcpus`]); an action-required #MC without a recovery point is a guest panic.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn srar_unconsumed_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    ACTION_REQUIRED_NEEDS_RECOVERY.store(1, Ordering::Release);
    mce_guest(vcpu, nr_vcpus, 1)
}

/// Spins in ring 3 until `flag` is non-zero, as long as it takes (a run that hangs here is
/// caught by the harness's deadline, not by a guess at how fast the host runs the vCPUs).
#[inline(always)]
fn wait_for(flag: &AtomicU32) {
    while flag.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}

/// `scenario=cr4-off`: every vCPU clears its (virtual) CR4.MCE, then waits for a machine
/// check it cannot take.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn cr4_off_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    hypercall(nr::SET_CR4_MCE, 0, 0);
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=amd`: machine checks are local, so only the vCPU that gets one handles it; every
/// vCPU finishes once one was handled anywhere.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn local_guest(_vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    LOCAL_MACHINE_CHECKS.store(1, Ordering::Release);
    start(nr_vcpus);
    wait_for(&HANDLED_ANYWHERE);
    finish()
}

/// `scenario=corrected`: vCPU 0 exits to the hypervisor (which polls the host banks) until
/// the host has seen an error; then every vCPU reports what it sees of its own MCA.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn corrected_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    if vcpu == 0 {
        let mut found = 0;
        while found == 0 {
            found = hypercall(nr::POLL_HOST_MCA, 0, 0);
        }
        puts(guest_text!(b"CE host-found="));
        put_dec(found);
        end_line();
        LEADER_DONE.store(1, Ordering::Release);
    } else {
        wait_for(&LEADER_DONE);
    }
    puts(guest_text!(b"CE seen mcg_status="));
    put_hex(rdmsr(MCG_STATUS));
    puts(guest_text!(b" mc1_status="));
    put_hex(rdmsr(MC0_CTL + 5));
    puts(guest_text!(b" machine_checks="));
    put_dec(u64::from(ROUNDS_DONE[slot(vcpu)].load(Ordering::Acquire)));
    end_line();
    finish()
}

/// `scenario=migrate-source`: every vCPU enables CMCI on bank 1 with threshold `vcpu + 1`
/// (state a migration must carry), then waits for one machine check like `mce`. When the
/// domain migrates away the machine stops first; when the migration is abandoned the
/// in-flight machine check is taken here.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn migrate_source_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    // Before `start`, so that READY means every vCPU has written it.
    wrmsr(MC1_CTL2, CTL2_CMCI_EN | (vcpu + 1));
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=migrate-dest`: the guest restored on the destination. Every vCPU takes the
/// machine checks restored pending (on its first entry to the kernel) and reports what it
/// has; then the last vCPU reads the `touch=` address, through a recovery point, while the
/// others wait.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn migrate_dest_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    let me = slot(vcpu);
    puts(guest_text!(b"RESUMED machine_checks="));
    put_dec(u64::from(ROUNDS_DONE[me].load(Ordering::Acquire)));
    puts(guest_text!(b" mcg_status="));
    put_hex(rdmsr(MCG_STATUS));
    puts(guest_text!(b" mc1_ctl2="));
    put_hex(rdmsr(MC1_CTL2));
    end_line();
    RESUMED.fetch_add(1, Ordering::AcqRel);
    if vcpu + 1 != nr_vcpus {
        wait_for(&LEADER_DONE);
        finish()
    }
    while u64::from(RESUMED.load(Ordering::Acquire)) < nr_vcpus {
        core::hint::spin_loop();
    }
    let touch = TOUCH_GUEST_PHYSICAL.load(Ordering::Acquire);
    if touch != 0 {
        puts(guest_text!(b"TOUCH reading guest "));
        put_hex(touch);
        end_line();
        match read_recovering(me, GUEST_RAM_BASE + touch) {
            Some(value) => {
                puts(guest_text!(b"TOUCH read ok value="));
                put_hex(value);
                puts(guest_text!(b": no machine check"));
            }
            None => puts(guest_text!(b"TOUCH machine check: read abandoned")),
        }
        end_line();
    }
    LEADER_DONE.store(1, Ordering::Release);
    finish()
}

/// One guest MSR access of the SPEC §3 probe.
#[derive(Clone, Copy)]
struct ProbeRow {
    write: bool,
    msr: u32,
    value: u64,
}

const fn read(msr: u32) -> ProbeRow {
    ProbeRow {
        write: false,
        msr,
        value: 0,
    }
}

const fn write(msr: u32, value: u64) -> ProbeRow {
    ProbeRow {
        write: true,
        msr,
        value,
    }
}

/// Every row of SPEC §3 a guest of the Intel profile can reach, in order; the host-side test
/// holds the expected outcome of each.
#[unsafe(link_section = ".guest.rodata")]
static PROBE: [ProbeRow; 42] = [
    read(0x179),
    write(0x179, 0),
    write(0x179, 0x100_0c02),
    read(0x17A),
    write(0x17A, 0x1),
    read(0x17A),
    write(0x17A, 0x8),
    write(0x17A, 0x10),
    write(0x17A, 0),
    read(0x17A),
    read(0x17B),
    write(0x17B, u64::MAX),
    read(0x17B),
    read(0x400),
    read(0x404),
    write(0x404, 0),
    read(0x404),
    read(0x408),
    read(0x47C),
    read(0x405),
    write(0x405, 0),
    write(0x405, 1),
    write(0x402, 5),
    read(0x407),
    read(0x415),
    write(0x415, 0),
    write(0x416, 1),
    read(0x47F),
    write(0x281, 0x4000_0005),
    read(0x281),
    write(0x281, 0x8000_0000),
    read(0x280),
    write(0x282, 0x4000_0001),
    read(0x282),
    read(0x29F),
    read(0x4D0),
    write(0x4D0, 1),
    read(0x0),
    read(0x1),
    write(0x1, 0),
    read(0x3A),
    read(0x480),
];

/// `scenario=msr-probe`: vCPU 0 performs every access of [`PROBE`] with real
/// `rdmsr`/`wrmsr` (trapped and emulated through vmce) and reports each outcome; the other
/// vCPUs finish at once.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn msr_probe_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    if vcpu == 0 {
        let faults = &GP_COUNT[0];
        let mut index = 0;
        while index < PROBE.len() {
            let row = PROBE[index];
            let before = faults.load(Ordering::Acquire);
            let value = if row.write {
                wrmsr(row.msr, row.value);
                0
            } else {
                rdmsr(row.msr)
            };
            let faulted = faults.load(Ordering::Acquire) != before;
            puts(guest_text!(b"PROBE "));
            if row.write {
                puts(guest_text!(b"wrmsr "));
                put_hex(u64::from(row.msr));
                puts(guest_text!(b" "));
                put_hex(row.value);
                if faulted {
                    puts(guest_text!(b" #GP"));
                } else {
                    puts(guest_text!(b" ok"));
                }
            } else {
                puts(guest_text!(b"rdmsr "));
                put_hex(u64::from(row.msr));
                if faulted {
                    puts(guest_text!(b" #GP"));
                } else {
                    puts(guest_text!(b" = "));
                    put_hex(value);
                }
            }
            end_line();
            index += 1;
        }
        puts(guest_text!(b"PROBE end"));
        end_line();
    }
    finish()
}

/// The guest program a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Scenario {
    /// Every vCPU reaches ring 3, says hello and finishes.
    Boot = 0,
    /// One host machine check, reflected and handled by every vCPU.
    Mce = 2,
    /// Two host machine checks in sequence.
    MceTwice = 3,
    /// One machine check whose rendezvous times out (a guest panic).
    MceTimeout = 4,
    /// One machine check while every guest spins in ring 3.
    MceBusy = 5,
    /// One machine check delivered the pre-rework Xen way: to vCPU 0 only.
    LegacyVcpu0 = 6,
    /// Every vCPU has CR4.MCE clear when the machine check comes.
    Cr4Off = 7,
    /// A corrected error, found by the hypervisor's poll and never reflected.
    Corrected = 8,
    /// The guest's own probe of every SPEC §3 row.
    MsrProbe = 9,
    /// An AMD guest on an AMD host: one vCPU takes the machine check.
    Amd = 10,
    /// The Intel+LMCE profile on a host without LMCE_P: refused at domain creation.
    LmceProfile = 11,
    /// The source of a live migration: driven through the migration channel.
    MigrateSource = 12,
    /// The destination of a live migration: restores from the migration channel first.
    MigrateDest = 13,
    /// One machine check while the last vCPU is offline (with `CR4.MCE` clear): skipped.
    OfflineVcpu = 14,
    /// An SRAR on a CPU that runs no vCPU: consumed by no vCPU, delivered as action-optional.
    SrarUnconsumed = 15,
    /// One machine check whose rendezvous the last vCPU skips; the others hold `MCIP` for good.
    McipHeld = 16,
    /// A console line held open on CPU 1 until a host machine check reaches that CPU.
    HeldLine = 17,
}

impl Scenario {
    /// Every scenario, for parsing.
    pub const ALL: [Self; 17] = [
        Self::Boot,
        Self::Mce,
        Self::MceTwice,
        Self::MceTimeout,
        Self::MceBusy,
        Self::LegacyVcpu0,
        Self::Cr4Off,
        Self::Corrected,
        Self::MsrProbe,
        Self::Amd,
        Self::LmceProfile,
        Self::MigrateSource,
        Self::MigrateDest,
        Self::OfflineVcpu,
        Self::SrarUnconsumed,
        Self::McipHeld,
        Self::HeldLine,
    ];

    /// The command-line name (`scenario=<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Mce => "mce",
            Self::MceTwice => "mce-twice",
            Self::MceTimeout => "mce-timeout",
            Self::MceBusy => "mce-busy",
            Self::LegacyVcpu0 => "legacy-vcpu0",
            Self::Cr4Off => "cr4-off",
            Self::Corrected => "corrected",
            Self::MsrProbe => "msr-probe",
            Self::Amd => "amd",
            Self::LmceProfile => "lmce-profile",
            Self::MigrateSource => "migrate-source",
            Self::MigrateDest => "migrate-dest",
            Self::OfflineVcpu => "offline-vcpu",
            Self::SrarUnconsumed => "srar-unconsumed",
            Self::McipHeld => "mcip-held",
            Self::HeldLine => "held-line",
        }
    }

    /// Looks a scenario up by name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    /// Whether the machine has the migration channel (COM2).
    pub fn uses_migration_channel(self) -> bool {
        matches!(self, Self::MigrateSource | Self::MigrateDest)
    }

    /// How many of the machine's `cpus` run a vCPU of the domain (vCPU `n` on CPU `n`): all,
    /// but for `srar-unconsumed`, whose last CPU runs the hypervisor alone, so that an SRAR
    /// raised there was consumed by no vCPU.
    pub fn vcpus(self, cpus: u32) -> u32 {
        match self {
            Self::SrarUnconsumed => cpus.saturating_sub(1).max(1),
            _ => cpus,
        }
    }

    /// How the hypervisor delivers reflected errors in this scenario.
    pub fn delivery(self) -> crate::hv::Delivery {
        match self {
            Self::LegacyVcpu0 => crate::hv::Delivery::LegacyVcpu0,
            _ => crate::hv::Delivery::Architectural,
        }
    }

    /// The guest's profile: the host's vendor, or Intel+LMCE when the scenario asks for it.
    pub fn profile(self, host: vmce::Vendor) -> vmce::Profile {
        match (self, host) {
            (Self::LmceProfile, _) => vmce::Profile::IntelLmce,
            (_, vmce::Vendor::Intel) => vmce::Profile::Intel,
            (_, vmce::Vendor::Amd) => vmce::Profile::Amd,
        }
    }

    /// The guest entry point and its parameter.
    pub fn program(self) -> (extern "C" fn(u64, u64, u64) -> !, u64) {
        match self {
            Self::Boot => (boot_guest, 0),
            Self::Mce => (mce_guest, 1),
            Self::MceTwice => (mce_guest, 2),
            Self::MceTimeout => (mce_timeout_guest, 0),
            Self::MceBusy => (mce_guest, MCE_BUSY | 1),
            Self::LegacyVcpu0 => (mce_guest, 1 | MCE_RENDEZVOUS_TIMES_OUT),
            Self::Cr4Off => (cr4_off_guest, 0),
            Self::Corrected => (corrected_guest, 0),
            Self::MsrProbe => (msr_probe_guest, 0),
            Self::Amd => (local_guest, 0),
            Self::LmceProfile => (boot_guest, 0),
            Self::MigrateSource => (migrate_source_guest, 0),
            Self::MigrateDest => (migrate_dest_guest, 0),
            Self::OfflineVcpu => (offline_guest, 0),
            Self::SrarUnconsumed => (srar_unconsumed_guest, 0),
            Self::McipHeld => (mcip_held_guest, 0),
            Self::HeldLine => (held_line_guest, 0),
        }
    }
}
