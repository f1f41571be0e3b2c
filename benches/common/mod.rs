//! What every vmce bench shares: the criterion settings and the facts file.
//!
//! Timings land where criterion puts them (`target/criterion/<group>/<name>/new/estimates.json`);
//! figures that are not timings (record and state sizes, the machine's load while the
//! benches ran) go to `target/tmp/vmce-bench-facts/<key>`, one value per file.
//! `benches/summary.py` reads both into the table of BENCHMARKS.md.
#![allow(dead_code)]

use criterion::Criterion;
use std::path::PathBuf;
use std::time::Duration;
use vmce::{GuestCpus, GuestFrame, GuestMemory, HostFrame, VcpuId};

/// Short runs: the whole `cargo bench` stays within a few minutes. The median of 50 samples
/// is what the summary reports; it holds up well on a busy two-core machine.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50)
        .noise_threshold(0.05)
}

fn facts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmce-bench-facts")
}

/// Records one non-timing figure for the summary, and prints it. Only a real benchmark run
/// (`cargo bench` passes `--bench`) records; `cargo test --benches` leaves the last run's
/// figures alone.
pub fn fact(key: &str, value: impl std::fmt::Display) {
    let value = value.to_string();
    println!("fact {key} = {value}");
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let dir = facts_dir();
    if let Err(error) =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(key), &value))
    {
        eprintln!("cannot record fact {key}: {error}");
    }
}

/// Records the 1-minute load average under `key` (Linux; nothing elsewhere).
pub fn load_average(key: &str) {
    if let Ok(loadavg) = std::fs::read_to_string("/proc/loadavg")
        && let Some(one_minute) = loadavg.split_whitespace().next()
    {
        fact(key, one_minute);
    }
}

/// The guest's RAM: guest frame g is host frame 0x4000 + g.
pub struct OffsetMemory;

impl GuestMemory for OffsetMemory {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        host.0.checked_sub(0x4000).map(GuestFrame)
    }
}

/// Every vCPU has `CR4.MCE` set; notification is the default no-op.
pub struct Cpus;

impl GuestCpus for Cpus {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }
    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        true
    }
}
