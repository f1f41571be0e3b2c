//! Ending the run through QEMU's `isa-debug-exit` device (`-device
//! isa-debug-exit,iobase=0xf4,iosize=0x04`): the codes, the port and QEMU's exit statuses are
//! the protocol's ([`ExitCode`], `vmce_qemu_protocol::debug_exit`).

#![cfg(target_os = "none")]

use crate::cpu;
pub use vmce_qemu_protocol::ExitCode;
use vmce_qemu_protocol::debug_exit;

const _: () = assert!(debug_exit::SIZE == 4, "the code is written with `outl`");

/// Stops the virtual machine with `code`; never returns.
pub fn exit_qemu(code: ExitCode) -> ! {
    crate::serial::before_exit();
    cpu::outl(debug_exit::PORT, code.device_value());
    // Without the device (a run outside the harness) just stop this CPU.
    cpu::halt_forever()
}
