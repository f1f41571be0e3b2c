//! The guest's probe of the MSR table: every access a guest of the Intel profile can make,
//! with real `rdmsr`/`wrmsr`, each outcome reported; the harness holds the expected one.

use super::runtime::*;
use super::shared::GP_COUNT;
use core::sync::atomic::Ordering;

/// One guest MSR access of the probe of docs/behaviour.md §3.
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

/// Every row of docs/behaviour.md §3 a guest of the Intel profile can reach, in order; the
/// host-side test holds the expected outcome of each.
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
                guest_print!(b"wrmsr ", hex(u64::from(row.msr)), b" ", hex(row.value));
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
