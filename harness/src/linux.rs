//! The Linux suite's host side: Debian's stock Linux boots as the guest of the SVM hypervisor
//! (`hypervisor/`, package `vmce-svm-hypervisor`) in QEMU, and its own console lines are the
//! verdict. Its tests are `tests/linux.rs`; `examples/qemu_demo.rs -- linux` tells one
//! error's story with it. What the hypervisor and this module say to each other is
//! [`vmce_qemu_protocol::linux`].
//!
//! - [`hypervisor`]: built once per process by a nested cargo (own target directory
//!   `target/svm-hypervisor`, from the workspace root so that `.cargo/config.toml` applies).
//! - [`guest`]: `hypervisor/fetch-guest.sh` fetches Debian's generic `linux-image-6.1` amd64
//!   and `busybox-static` with the ordinary Debian client (`apt-get download`, `dpkg-deb`),
//!   caches them outside the repository (`~/.cache/vmce-linux`, or `VMCE_LINUX_CACHE`), and
//!   packs the initramfs around `hypervisor/guest/init`. It fails loudly; a test that cannot
//!   get the guest fails, never skips.
//! - [`LinuxRun::run`] boots one machine (QEMU TCG `-cpu max`, which offers SVM and nested
//!   paging) and reads COM1 line by line until every expected line has appeared in order.
//!   It stops early, as a failure, on a fatal line (Linux's panic, the hypervisor's domain
//!   shutdown or failure lines, each scenario's own) that is not the next expected line, once
//!   the guest has said [`console::ALIVE`] [`GIVE_UP_AFTER_ALIVE`] times without the
//!   expected line, or when QEMU exits; [`DEADLINE`] only catches a hung machine.
//! - Every machine's serial transcript is written to
//!   `target/linux-transcripts/<run name>.txt` (the failure message names it).
//! - Machines run one at a time (the crate's machine lock), as the other suites' do.

use crate::MACHINE_LOCK;
pub use vmce_qemu_protocol::linux::{LinuxProfile, LinuxScenario};
use vmce_qemu_protocol::linux::{console, params};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A machine that has not finished after this long is hung (a passing run takes 10–20 s).
pub const DEADLINE: Duration = Duration::from_secs(150);
/// The guest prints [`console::ALIVE`] once a second after READY; a run still waiting for an
/// expected line when the count passes this has failed.
pub const GIVE_UP_AFTER_ALIVE: u32 = 12;
/// vCPUs of the SMP runs: `VMCE_SVM_VCPUS` (2..=4), 4 by default.
pub const VCPUS_VARIABLE: &str = "VMCE_SVM_VCPUS";

const QEMU: &str = "qemu-system-x86_64";
const TARGET: &str = "x86_64-unknown-none";
const PACKAGE: &str = "vmce-svm-hypervisor";

fn workspace_dir() -> PathBuf {
    crate::workspace_dir()
}

/// Path of the hypervisor ELF, built on first use (panics with cargo's output if it fails).
pub fn hypervisor() -> &'static Path {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PATH.get_or_init(build_hypervisor) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn build_hypervisor() -> Result<PathBuf, String> {
    let workspace = workspace_dir();
    let target_dir = workspace.join("target").join("svm-hypervisor");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--package",
            PACKAGE,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // The target's rustflags come from .cargo/config.toml; an outer RUSTFLAGS would
        // replace them (and drop relocation-model=static).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .map_err(|error| format!("cannot run cargo to build the hypervisor: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {PACKAGE} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = target_dir.join(TARGET).join("release").join(PACKAGE);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("cargo succeeded but {} is missing", path.display()))
    }
}

/// Debian's kernel and the initramfs, as `fetch-guest.sh` left them.
#[derive(Debug)]
pub struct GuestImages {
    /// The `vmlinux` ELF (with the PVH note) extracted from the package's `vmlinuz`.
    pub vmlinux: PathBuf,
    /// The busybox initramfs whose `/init` is `hypervisor/guest/init`.
    pub initrd: PathBuf,
    /// The Debian package the kernel came from (`linux-image-6.1.0-…-amd64`).
    pub package: String,
}

/// The guest, fetched (or found in the cache) on first use; panics with the script's reason
/// if it cannot be had.
pub fn guest() -> &'static GuestImages {
    static GUEST: OnceLock<Result<GuestImages, String>> = OnceLock::new();
    match GUEST.get_or_init(fetch_guest) {
        Ok(images) => images,
        Err(message) => panic!("{message}"),
    }
}

fn fetch_guest() -> Result<GuestImages, String> {
    let script = workspace_dir().join("hypervisor").join("fetch-guest.sh");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): the Linux suite needs Debian's kernel (see its message above)",
            script.display(),
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
    let images = GuestImages {
        vmlinux: dir.join("vmlinux"),
        initrd: dir.join("initrd.gz"),
        package: std::fs::read_to_string(dir.join("kernel-package"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    if images.vmlinux.is_file() && images.initrd.is_file() {
        Ok(images)
    } else {
        Err(format!(
            "{} left no vmlinux/initrd.gz in {}",
            script.display(),
            dir.display()
        ))
    }
}

/// vCPUs of the SMP runs ([`VCPUS_VARIABLE`], 2..=4, default 4).
pub fn smp_vcpus() -> u32 {
    std::env::var(VCPUS_VARIABLE)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(params::MAX_VCPUS)
        .clamp(2, params::MAX_VCPUS)
}

/// `mce-exceptions: c c …`: Linux's per-CPU #MC count (its `/proc/interrupts` row) as the
/// guest's alive line prints it, `count` on each of `vcpus` CPUs.
pub fn exceptions_line(vcpus: u32, count: u32) -> String {
    let counts: Vec<String> = (0..vcpus).map(|_| count.to_string()).collect();
    format!("mce-exceptions: {}", counts.join(" "))
}

/// One machine: which scenario, profile and vCPUs, and what its console must say.
#[derive(Clone, Debug)]
pub struct LinuxRun {
    /// Names the transcript file.
    pub name: String,
    /// What the hypervisor does.
    pub scenario: LinuxScenario,
    /// The guest's profile (and CPUID vendor).
    pub profile: LinuxProfile,
    /// vCPUs (1..=4).
    pub vcpus: u32,
    /// Substrings that must appear on successive lines, in this order.
    pub expect: Vec<String>,
    /// Substrings that fail the run at once (unless the line is the next expected one).
    pub fatal: Vec<String>,
}

impl LinuxRun {
    /// A run with the default fatal lines: Linux's panic, the hypervisor's domain shutdown
    /// and its failure lines.
    pub fn new(name: &str, scenario: LinuxScenario, profile: LinuxProfile, vcpus: u32) -> Self {
        let mut fatal = vec![
            "Kernel panic".to_owned(),
            console::DOMAIN_SHUTDOWN.to_owned(),
        ];
        fatal.extend(console::HYPERVISOR_FAILURES.iter().map(|s| (*s).to_owned()));
        Self {
            name: name.to_owned(),
            scenario,
            profile,
            vcpus,
            expect: Vec::new(),
            fatal,
        }
    }

    /// Adds a line that must appear after the previous expected one.
    pub fn expect(mut self, line: impl Into<String>) -> Self {
        self.expect.push(line.into());
        self
    }

    /// Adds a substring that fails the run as soon as a line contains it.
    pub fn forbid(mut self, line: impl Into<String>) -> Self {
        self.fatal.push(line.into());
        self
    }

    /// Boots the machine and reads it until the run is decided (see the module docs).
    pub fn run(&self) -> LinuxTranscript {
        check_qemu_installed();
        let kernel = hypervisor();
        let guest = guest();
        let _one_at_a_time = MACHINE_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let initrd_size = std::fs::metadata(&guest.initrd)
            .map(|meta| meta.len())
            .unwrap_or_else(|error| panic!("{}: {error}", guest.initrd.display()));
        let mut command = Command::new(QEMU);
        command
            .args(["-machine", "q35", "-cpu", "max", "-m", "1024"])
            .args(["-smp", &self.vcpus.to_string()])
            .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
            .args(["-monitor", "none"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-device")
            .arg(format!(
                "loader,file={},addr={:#x},force-raw=on",
                guest.vmlinux.display(),
                params::VMLINUX
            ))
            .arg("-device")
            .arg(format!(
                "loader,file={},addr={:#x},force-raw=on",
                guest.initrd.display(),
                params::INITRD
            ));
        for (addr, value) in [
            (params::SCENARIO, self.scenario.code()),
            (params::VCPUS, u64::from(self.vcpus)),
            (params::PROFILE, self.profile.code()),
            (params::INITRD_SIZE, initrd_size),
        ] {
            command
                .arg("-device")
                .arg(format!("loader,addr={addr:#x},data={value},data-len=8"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {QEMU}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if sender.send(text).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        let mut lines = Vec::new();
        let mut matched = 0;
        let outcome = loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            if left.is_zero() {
                break Outcome::Deadline;
            }
            let line = match receiver.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break Outcome::QemuExited,
            };
            let next = self.expect.get(matched);
            if next.is_some_and(|want| line.contains(want.as_str())) {
                matched += 1;
                lines.push(line);
                if matched == self.expect.len() {
                    break Outcome::Passed;
                }
                continue;
            }
            if let Some(bad) = self.fatal.iter().find(|bad| line.contains(bad.as_str())) {
                let outcome = Outcome::FatalLine(bad.clone(), line.clone());
                lines.push(line);
                break outcome;
            }
            let alive = line
                .strip_prefix(console::ALIVE)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|count| count.parse::<u32>().ok());
            lines.push(line);
            if alive.is_some_and(|count| count > GIVE_UP_AFTER_ALIVE) {
                break Outcome::GaveUp;
            }
        };
        let elapsed = start.elapsed();
        let _ = child.kill();
        let status = child.wait().ok().and_then(|status| status.code());
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let transcript = LinuxTranscript {
            name: self.name.clone(),
            lines,
            matched,
            waiting_for: self.expect.get(matched).cloned(),
            outcome,
            elapsed,
            path: workspace_dir()
                .join("target")
                .join("linux-transcripts")
                .join(format!("{}.txt", self.name)),
        };
        transcript.save(self, status, &stderr);
        transcript
    }

    /// [`LinuxRun::run`], and panics unless every expected line appeared.
    pub fn check(&self) -> LinuxTranscript {
        let transcript = self.run();
        if transcript.outcome != Outcome::Passed {
            panic!(
                "{}: {}; still waiting for {:?} (transcript: {})",
                self.name,
                transcript.outcome,
                transcript.waiting_for,
                transcript.path.display()
            );
        }
        eprintln!("{}: passed in {:.1?}", self.name, transcript.elapsed);
        transcript
    }
}

fn check_qemu_installed() {
    if let Err(error) = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        panic!(
            "cannot run {QEMU} ({error}); the Linux suite needs it: apt-get install qemu-system-x86"
        );
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every expected line appeared, in order.
    Passed,
    /// A fatal substring (first) appeared in a line (second).
    FatalLine(String, String),
    /// The guest kept running past [`GIVE_UP_AFTER_ALIVE`] without the expected line.
    GaveUp,
    /// QEMU exited first.
    QemuExited,
    /// [`DEADLINE`] passed.
    Deadline,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passed => f.write_str("every expected line seen"),
            Self::FatalLine(bad, line) => write!(f, "fatal line ({bad:?}): {line}"),
            Self::GaveUp => write!(
                f,
                "the guest was alive {GIVE_UP_AFTER_ALIVE} s after READY without the expected line"
            ),
            Self::QemuExited => f.write_str("QEMU exited"),
            Self::Deadline => write!(f, "the deadline of {DEADLINE:?} passed"),
        }
    }
}

/// What one machine printed, and how its run ended.
#[derive(Clone, Debug)]
pub struct LinuxTranscript {
    /// The run's name.
    pub name: String,
    /// Every line read, in order.
    pub lines: Vec<String>,
    /// How many expected lines appeared.
    pub matched: usize,
    /// The first expected line that did not appear.
    pub waiting_for: Option<String>,
    /// How the run ended.
    pub outcome: Outcome,
    /// From QEMU's start to the decision.
    pub elapsed: Duration,
    /// Where the transcript was written.
    pub path: PathBuf,
}

impl LinuxTranscript {
    /// Index of the first line that contains `needle`.
    pub fn position(&self, needle: &str) -> Option<usize> {
        self.lines.iter().position(|line| line.contains(needle))
    }

    /// Every line that contains `needle`.
    pub fn lines_containing(&self, needle: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|line| line.contains(needle))
            .map(String::as_str)
            .collect()
    }

    /// Linux's own lines (neither the hypervisor's nor the guest `/init`'s) that contain
    /// `needle`.
    pub fn linux_lines_containing(&self, needle: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|line| {
                !line.starts_with(console::HYPERVISOR)
                    && !line.starts_with(console::GUEST)
                    && line.contains(needle)
            })
            .map(String::as_str)
            .collect()
    }

    fn save(&self, run: &LinuxRun, status: Option<i32>, stderr: &str) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let Ok(mut file) = std::fs::File::create(&self.path) else {
            return;
        };
        let _ = writeln!(
            file,
            "# {}: scenario {}, profile {}, {} vCPU(s): {} after {:.1?}; QEMU exit status {status:?}",
            self.name, run.scenario, run.profile, run.vcpus, self.outcome, self.elapsed
        );
        for line in &self.lines {
            let _ = writeln!(file, "{line}");
        }
        if !stderr.is_empty() {
            let _ = writeln!(file, "# QEMU stderr:\n{stderr}");
        }
    }
}
