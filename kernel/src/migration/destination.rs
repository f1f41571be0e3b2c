//! The migration destination: reads one record stream from the channel before any guest
//! runs, restores it, and keeps the broken frames unmapped.

use crate::channel::{self, LineReader, Received};
use crate::hv::records::{IncomingRecords, RECORD_MAX, RecordFormat};
use crate::{hv, kprintln, paging};
use core::fmt;
use vmce_qemu_protocol::migration::{BEGIN, END, FAILED, RECORD, RESTORED};

/// How long (TSC ticks, several seconds under QEMU TCG) to wait for each line.
const LINE_TIMEOUT_CYCLES: u64 = 20_000_000_000;

/// Receives and restores the domain's virtual MCA, or stops the machine with a kernel
/// failure saying why.
///
/// # Safety
/// Called by the bootstrap processor after the domain exists and before the application
/// processors start (broken frames are unmapped with only this CPU's TLB flushed).
pub unsafe fn receive_and_restore() {
    kprintln!("MIG destination: waiting for the record stream on the migration channel");
    let mut reader = LineReader::new();
    let begin = next_line(&mut reader);
    let format = parse_begin(&begin)
        .unwrap_or_else(|| fail(format_args!("expected {BEGIN}, got \"{begin}\"")));
    if format == RecordFormat::Xen4_10 {
        fail(format_args!(
            "this destination reads native records, not {}",
            format.name()
        ));
    }
    kprintln!("MIG destination: {begin}");
    let mut incoming = IncomingRecords::new();
    let mut received = 0usize;
    loop {
        let line = next_line(&mut reader);
        let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if let (RECORD, hex) = (word, rest) {
            let mut bytes = [0u8; RECORD_MAX];
            let Some(len) = channel::decode_hex(hex, &mut bytes) else {
                fail(format_args!("record {received} is not hex"));
            };
            if let Err(error) = incoming.add(&bytes[..len]) {
                fail(format_args!("record {received}: {error}"));
            }
            received += 1;
        } else if let (END, Some(count)) = (word, rest.strip_prefix("records=")) {
            if count.parse::<usize>().ok() != Some(received) {
                fail(format_args!("{line}, but {received} records arrived"));
            }
            break;
        } else {
            fail(format_args!("unexpected line \"{line}\""));
        }
    }
    if let Err(error) = incoming.restore() {
        fail(format_args!("{error}"));
    }
    hv::for_each_broken_frame(|frame| {
        // SAFETY: forwarded from this function's contract: the BSP, before the APs start;
        // the kernel holds no reference into guest RAM.
        match unsafe { paging::unmap_guest_frame(frame) } {
            Ok(host) => kprintln!(
                "MIG destination: guest frame {frame:#x} is broken: kept unmapped (host {host:#x})"
            ),
            Err(error) => fail(format_args!(
                "cannot unmap broken frame {frame:#x}: {error:?}"
            )),
        }
    });
    kprintln!("MIG destination: restored {received} records; starting the guests");
    channel::send_line(format_args!("{RESTORED} records={received}"));
}

/// The format named by `BEGIN <phase> format=<format> vcpus=<n>`.
fn parse_begin(line: &str) -> Option<RecordFormat> {
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some(BEGIN) {
        return None;
    }
    words.find_map(|word| word.strip_prefix("format=").and_then(RecordFormat::parse))
}

/// The next line, as an owned copy (the reader's buffer is reused).
fn next_line(reader: &mut LineReader) -> heapless::String<{ channel::LINE_MAX }> {
    match reader.wait(LINE_TIMEOUT_CYCLES) {
        Received::Line => {
            let mut line = heapless::String::new();
            let _ = line.push_str(reader.line());
            line
        }
        Received::TooLong => fail(format_args!(
            "a line longer than {} bytes",
            channel::LINE_MAX
        )),
        Received::Nothing => fail(format_args!("no record stream arrived")),
    }
}

fn fail(reason: fmt::Arguments<'_>) -> ! {
    kprintln!("MIG destination: restore failed: {reason}");
    channel::send_line(format_args!("{FAILED} {reason}"));
    channel::drain();
    panic!("migration failed: {reason}")
}
