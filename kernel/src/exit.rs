//! Ending the run through QEMU's `isa-debug-exit` device (I/O port 0xf4, 4 bytes wide).
//!
//! QEMU exits with status `(value << 1) | 1`, so every code below is odd on the host side
//! and can never be confused with QEMU's own 0 (normal exit, or a triple fault under
//! `-no-reboot`) or 1 (QEMU error).

use crate::cpu;

const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Why the kernel stops; the discriminant is the value written to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Every guest reported "done": QEMU status 33.
    Success = 0x10,
    /// Kernel panic or unexpected exception: QEMU status 35.
    KernelFailure = 0x11,
    /// A guest reported a panic (for example a rendezvous timeout): QEMU status 37.
    GuestPanic = 0x12,
    /// A guest was killed (unhandled fault, machine check it cannot take): QEMU status 39.
    GuestCrash = 0x13,
}

/// Stops the virtual machine with `code`; never returns.
pub fn exit_qemu(code: ExitCode) -> ! {
    crate::serial::before_exit();
    cpu::outl(DEBUG_EXIT_PORT, code as u32);
    // Without the device (a run outside the harness) just stop this CPU.
    cpu::halt_forever()
}
