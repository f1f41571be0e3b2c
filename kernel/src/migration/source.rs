//! The migration source's controller: commands from the channel, run on CPU 0's timer tick.
//!
//! The tick runs in interrupt context, on CPU 0, whether CPU 0 was running its guest, blocked
//! in the kernel or parked by a pause; it never blocks, so a `stop` is answered on a later
//! tick, once every vCPU is parked.

use crate::channel::{self, LineReader, Received};
use crate::exit::{ExitCode, exit_qemu};
use crate::hv::records::{self, RecordFormat};
use crate::{apic, kprintln, pause, smp};
use core::sync::atomic::{AtomicBool, Ordering};
use vmce_qemu_protocol::migration::{
    BEGIN, END, ERROR, FINAL, PRECOPY, RECORD, REFUSED, RESUME, RESUMED, STOP, STOPPED,
};

/// Timer period: 125 000 ticks of the 1 GHz APIC bus divided by 16, 2 ms.
const TICK_BUS_CYCLES_BY_16: u32 = 125_000;

static READER: spin::mutex::SpinMutex<LineReader> = spin::mutex::SpinMutex::new(LineReader::new());
/// A `stop` waits for every vCPU to park before it is answered.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Starts the controller's timer on this CPU (CPU 0).
pub fn start() {
    kprintln!("MIG source: listening on the migration channel");
    apic::start_periodic_timer(TICK_BUS_CYCLES_BY_16);
}

/// One timer tick: answers a finished `stop`, then runs every command that has arrived.
pub fn on_timer_tick() {
    let vcpus = smp::cpu_count();
    if STOP_REQUESTED.load(Ordering::Acquire) && pause::parked() >= vcpus {
        STOP_REQUESTED.store(false, Ordering::Release);
        kprintln!("MIG source: all {vcpus} vCPUs parked: the domain is stopped");
        channel::send_line(format_args!("{STOPPED} vcpus={vcpus}"));
    }
    // Only CPU 0 ticks, and a tick never interrupts another: the lock is never contended.
    let Some(mut reader) = READER.try_lock() else {
        return;
    };
    loop {
        match reader.poll() {
            Received::Nothing => return,
            Received::TooLong => channel::send_line(format_args!("{ERROR} line too long")),
            Received::Line => run(reader.line(), vcpus),
        }
    }
}

fn run(command: &str, vcpus: u32) {
    kprintln!("MIG source: command \"{command}\"");
    let mut words = command.split_ascii_whitespace();
    let (verb, argument) = (words.next().unwrap_or(""), words.next());
    let format = argument.and_then(RecordFormat::parse);
    match (verb, format) {
        (PRECOPY, Some(format)) => {
            send_stream(PRECOPY, format, vcpus);
        }
        (STOP, _) => {
            kprintln!("MIG source: stop-and-copy: pausing every vCPU");
            STOP_REQUESTED.store(true, Ordering::Release);
            pause::pause_domain();
        }
        (FINAL, Some(_)) if pause::parked() < vcpus => {
            channel::send_line(format_args!("{ERROR} {FINAL} before every vCPU is parked"));
        }
        (FINAL, Some(format)) => {
            if send_stream(FINAL, format, vcpus) {
                kprintln!(
                    "MIG source: final records sent: the domain now lives on the destination; stopping"
                );
                channel::drain();
                exit_qemu(ExitCode::Success);
            }
            kprintln!("MIG source: final save refused: the domain stays paused here");
        }
        (RESUME, _) => {
            kprintln!("MIG source: migration abandoned: the domain resumes here");
            pause::unpause_domain();
            channel::send_line(format_args!("{RESUMED}"));
        }
        (PRECOPY | FINAL, None) => channel::send_line(format_args!(
            "{ERROR} {verb} needs a format: native-v2, native-v1 or xen-4.10"
        )),
        _ => channel::send_line(format_args!("{ERROR} unknown command \"{command}\"")),
    }
}

/// Saves the domain in `format` and sends the stream; `false` when vmce refused.
fn send_stream(phase: &str, format: RecordFormat, vcpus: u32) -> bool {
    let save = records::save(format, phase);
    channel::send_line(format_args!(
        "{BEGIN} {phase} format={} vcpus={vcpus}",
        format.name()
    ));
    if save.refusals.is_empty() {
        for record in &save.records {
            channel::send_hex_line(RECORD, record);
        }
        channel::send_line(format_args!("{END} records={}", save.records.len()));
        kprintln!(
            "MIG {phase}: sent {} records ({})",
            save.records.len(),
            format.name()
        );
        return true;
    }
    for (owner, error) in &save.refusals {
        kprintln!(
            "MIG {phase}: {} refused for {owner}: {error}",
            format.name()
        );
        channel::send_line(format_args!("{REFUSED} {owner}: {error}"));
    }
    channel::send_line(format_args!("{END} refused={}", save.refusals.len()));
    false
}
