//! Host-side harness: builds `vmce-kernel`, runs it under QEMU, reads its serial lines and
//! drives the QEMU monitor (machine-check injection).
//!
//! - The kernel is built once per test binary ([`kernel`]) by a nested cargo with its own
//!   target directory (`target/qemu-kernel`), so it never waits on the outer cargo's lock.
//! - Each [`Qemu`] is one virtual machine: `-serial stdio` (read by a thread, line by line),
//!   `-monitor unix:<socket>`, `isa-debug-exit` for the exit status. Dropping it kills QEMU.
//! - Machines run one at a time (a process-wide lock held by each [`Qemu`]): the host has
//!   two cores and each machine has four TCG vCPUs, and the timings stay meaningful.
//! - A missing `qemu-system-x86_64` is a failure, never a skip.
//! - Nothing here depends on how fast the host runs the machine: a test waits for the line
//!   (or, for a state the kernel cannot print without leaving it, the memory cell read
//!   through the monitor: [`Qemu::wait_for_physical_u32`]) that says the machine is where an
//!   injection needs it, and the deadlines ([`LINE_TIMEOUT`], [`SCENARIO_BUDGET`]) only
//!   catch a machine that hangs.
//! - A machine started with [`Qemu::start_with_migration_channel`] also has a second serial
//!   port (COM2) on a socket chardev, the migration channel ([`channel`]).

#![allow(dead_code)]

pub mod channel;

use channel::{MigrationChannel, RecordStream};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// QEMU exit status when every guest reported "done".
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU exit status after a kernel panic.
pub const EXIT_KERNEL_FAILURE: i32 = 35;
/// QEMU exit status after a guest panic (e.g. a rendezvous timeout).
pub const EXIT_GUEST_PANIC: i32 = 37;
/// QEMU exit status after the kernel killed the domain.
pub const EXIT_GUEST_CRASH: i32 = 39;

/// Longest any scenario may take, from QEMU start to its exit.
pub const SCENARIO_BUDGET: Duration = Duration::from_secs(15);
/// Set this environment variable to see every machine's serial transcript (and migration
/// channel) after it exits: `VMCE_QEMU_TRANSCRIPT=1 cargo test --test qemu_migration --
/// --nocapture`.
pub const SHOW_TRANSCRIPT: &str = "VMCE_QEMU_TRANSCRIPT";
/// Default wait for one serial line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

const QEMU: &str = "qemu-system-x86_64";
/// TCG's most capable CPU, made to report Intel (TCG's `max` says AuthenticAMD by default).
/// Its MCA: `MCG_CAP` = 0x100010A (10 banks, `CTL_P`, `SER_P`).
pub const INTEL_CPU: &str = "max,vendor=GenuineIntel";
/// TCG's `max` CPU as it comes: AuthenticAMD, same MCA banks.
pub const AMD_CPU: &str = "max";
const KERNEL_TARGET: &str = "x86_64-unknown-none";

static MACHINE_LOCK: Mutex<()> = Mutex::new(());
static MACHINE_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the kernel ELF, built on first use (panics with cargo's output if it fails).
pub fn kernel() -> &'static Path {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match KERNEL.get_or_init(build_kernel) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn build_kernel() -> Result<PathBuf, String> {
    let target_dir = manifest_dir().join("target").join("qemu-kernel");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(manifest_dir())
        .args([
            "build",
            "--release",
            "--target",
            KERNEL_TARGET,
            "--bin",
            "vmce-kernel",
        ])
        .args(["--features", "qemu-kernel"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // The target's rustflags come from .cargo/config.toml; an outer RUSTFLAGS would
        // replace them (and drop relocation-model=static).
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .map_err(|error| format!("cannot run cargo to build the kernel: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building vmce-kernel failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = target_dir
        .join(KERNEL_TARGET)
        .join("release")
        .join("vmce-kernel");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("cargo succeeded but {} is missing", path.display()))
    }
}

fn check_qemu_installed() {
    match Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("{QEMU} is not installed; these tests need it: apt-get install qemu-system-x86")
        }
        Err(error) => panic!("cannot run {QEMU}: {error}"),
    }
}

/// One running virtual machine.
pub struct Qemu {
    child: Child,
    lines: Receiver<String>,
    transcript: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    monitor: Option<UnixStream>,
    migration: Option<MigrationChannel>,
    socket_dir: PathBuf,
    scenario: String,
    started: Instant,
    _exclusive: MutexGuard<'static, ()>,
}

impl Qemu {
    /// Boots `vmce-kernel` with `-smp 4` and `scenario=<scenario>`.
    pub fn start(scenario: &str) -> Self {
        Self::start_with_cpus(scenario, 4)
    }

    /// Boots `vmce-kernel` with `cpus` CPUs and `scenario=<scenario>` on an Intel CPU.
    pub fn start_with_cpus(scenario: &str, cpus: u32) -> Self {
        Self::start_on(scenario, cpus, INTEL_CPU)
    }

    /// Boots `vmce-kernel` with `cpus` CPUs of QEMU model `cpu_model` and
    /// `scenario=<scenario>`.
    pub fn start_on(scenario: &str, cpus: u32, cpu_model: &str) -> Self {
        Self::launch(scenario, cpus, cpu_model, false)
    }

    /// Like [`Qemu::start_on`], with the migration channel: COM2 on a socket chardev that the
    /// harness is connected to (`-chardev socket,... -serial chardev:migration`).
    pub fn start_with_migration_channel(scenario: &str, cpus: u32, cpu_model: &str) -> Self {
        Self::launch(scenario, cpus, cpu_model, true)
    }

    fn launch(scenario: &str, cpus: u32, cpu_model: &str, migration_channel: bool) -> Self {
        check_qemu_installed();
        let kernel = kernel();
        let exclusive = MACHINE_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let socket_dir = std::env::temp_dir().join(format!(
            "vmce-kdev-{}-{}",
            std::process::id(),
            MACHINE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&socket_dir).expect("create the monitor socket directory");
        let socket = socket_dir.join("monitor.sock");
        let channel_socket = socket_dir.join("migration.sock");
        let mut command = Command::new(QEMU);
        command
            .args(["-machine", "pc", "-cpu", cpu_model, "-m", "128M"])
            .args(["-smp", &cpus.to_string()])
            .args(["-display", "none", "-no-reboot"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .args(["-serial", "stdio"]);
        if migration_channel {
            command
                .arg("-chardev")
                .arg(format!(
                    "socket,id=migration,path={},server=on,wait=off",
                    channel_socket.display()
                ))
                .args(["-serial", "chardev:migration"]);
        }
        let mut child = command
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-kernel")
            .arg(kernel)
            .args(["-append", &format!("scenario={scenario}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {QEMU}: {error}"));
        let started = Instant::now();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line.trim_end_matches('\r').to_owned()).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let mut machine = Self {
            child,
            lines,
            transcript: Vec::new(),
            stderr: Some(stderr),
            monitor: None,
            migration: None,
            socket_dir,
            scenario: scenario.to_owned(),
            started,
            _exclusive: exclusive,
        };
        machine.connect_monitor(&socket);
        if migration_channel {
            machine.connect_migration_channel(&channel_socket);
        }
        machine
    }

    fn connect_migration_channel(&mut self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match MigrationChannel::connect(socket) {
                Ok(channel) => {
                    self.migration = Some(channel);
                    return;
                }
                Err(error) if Instant::now() > deadline => {
                    self.fail(&format!("cannot connect to the migration channel: {error}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn channel(&mut self) -> &mut MigrationChannel {
        match self.migration {
            Some(ref mut channel) => channel,
            None => panic!("this machine has no migration channel"),
        }
    }

    /// Sends one line (a command, or a line of a record stream) on the migration channel.
    pub fn send_migration_line(&mut self, line: &str) {
        if let Err(error) = self.channel().send_line(line) {
            self.fail(&format!(
                "writing {line:?} to the migration channel failed: {error}"
            ));
        }
    }

    /// Sends a whole record stream on the migration channel.
    pub fn send_record_stream(&mut self, stream: &RecordStream) {
        for line in &stream.lines {
            self.send_migration_line(line);
        }
    }

    /// Waits until a line from the migration channel contains `pattern` (earlier lines
    /// first); returns it.
    pub fn wait_for_migration_line(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            if let Some(line) = self.channel().find(pattern) {
                return line;
            }
            if !self.channel().receive(deadline) {
                self.fail(&format!(
                    "timed out waiting for a migration-channel line containing {pattern:?}"
                ));
            }
        }
    }

    /// Receives the next record stream (`BEGIN` .. `END`) from the migration channel.
    pub fn receive_record_stream(&mut self) -> RecordStream {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            if let Some(stream) = self.channel().take_stream() {
                return stream;
            }
            if !self.channel().receive(deadline) {
                self.fail("timed out waiting for a record stream on the migration channel");
            }
        }
    }

    fn connect_monitor(&mut self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("socket timeout");
                    self.monitor = Some(stream);
                    self.read_monitor_prompt();
                    return;
                }
                Err(error) => {
                    if Instant::now() > deadline {
                        self.fail(&format!("cannot connect to the QEMU monitor: {error}"));
                    }
                    if let Ok(Some(status)) = self.child.try_wait() {
                        self.fail(&format!("QEMU exited at start with {status}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Reads monitor output up to the next `(qemu) ` prompt.
    fn read_monitor_prompt(&mut self) -> String {
        let mut output = Vec::new();
        let mut chunk = [0u8; 4096];
        while !output.ends_with(b"(qemu) ") {
            let monitor = self.monitor.as_mut().expect("monitor connected");
            match monitor.read(&mut chunk) {
                Ok(0) => break,
                Ok(count) => output.extend_from_slice(&chunk[..count]),
                Err(error) => {
                    let text = String::from_utf8_lossy(&output).into_owned();
                    self.fail(&format!("QEMU monitor read failed: {error}; got {text:?}"));
                }
            }
        }
        String::from_utf8_lossy(&output).into_owned()
    }

    /// Runs a monitor command; returns what QEMU printed in response (echo and terminal
    /// escape sequences removed, so an empty string means "no complaint").
    pub fn monitor(&mut self, command: &str) -> String {
        let monitor = self.monitor.as_mut().expect("monitor connected");
        monitor
            .write_all(format!("{command}\n").as_bytes())
            .expect("write to the QEMU monitor");
        let raw = self.read_monitor_prompt();
        let plain = strip_terminal_escapes(&raw);
        // The monitor echoes the command on one line; the response follows it.
        let response = plain.split_once("\r\n").map_or("", |(_, rest)| rest);
        response
            .trim_end_matches("(qemu) ")
            .replace("\r\n", "\n")
            .trim()
            .to_owned()
    }

    /// Injects a machine check with QEMU's `mce [-b] cpu bank status mcg_status addr misc`
    /// and fails the test if QEMU refuses it.
    pub fn inject_mce(&mut self, injection: &Injection) {
        let command = injection.monitor_command();
        let response = self.monitor(&command);
        if !response.is_empty() {
            self.fail(&format!("QEMU refused `{command}`: {response}"));
        }
    }

    /// Reads the `u32` at guest-physical `address` through the monitor (`xp`); the kernel
    /// identity-maps its memory, so this is also the kernel's address.
    pub fn read_physical_u32(&mut self, address: u64) -> u32 {
        let command = format!("xp /1wx {address:#x}");
        let response = self.monitor(&command);
        let value = response.rsplit_once(": ").and_then(|(_, value)| {
            u32::from_str_radix(value.trim().trim_start_matches("0x"), 16).ok()
        });
        match value {
            Some(value) => value,
            None => self.fail(&format!("cannot read `{command}`'s answer: {response:?}")),
        }
    }

    /// Polls the `u32` at guest-physical `address` until it holds `expected` (for at most
    /// [`LINE_TIMEOUT`]); the way to wait for a state the kernel cannot print, because
    /// printing would leave it.
    pub fn wait_for_physical_u32(&mut self, address: u64, expected: u32) {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let value = self.read_physical_u32(address);
            if value == expected {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "timed out waiting for {expected} at {address:#x} (it holds {value})"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn receive(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.transcript.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits until a serial line contains `pattern` (looking at earlier lines first).
    pub fn wait_for_line(&mut self, pattern: &str) -> String {
        self.wait_for_lines(pattern, 1).remove(0)
    }

    /// Waits until `count` serial lines contain `pattern`; returns them.
    pub fn wait_for_lines(&mut self, pattern: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let found = self.lines_containing(pattern);
            if found.len() >= count {
                return found;
            }
            if self.receive(deadline).is_none() {
                self.fail(&format!(
                    "timed out waiting for {count} line(s) containing {pattern:?}"
                ));
            }
        }
    }

    /// Every serial line received so far that contains `pattern`.
    pub fn lines_containing(&self, pattern: &str) -> Vec<String> {
        self.transcript
            .iter()
            .filter(|line| line.contains(pattern))
            .cloned()
            .collect()
    }

    /// Waits for QEMU to exit (collecting the remaining serial output) and returns its exit
    /// status; fails if the whole scenario took longer than [`SCENARIO_BUDGET`].
    pub fn wait_for_exit(&mut self) -> i32 {
        let deadline = self.started + SCENARIO_BUDGET;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    while self
                        .receive(Instant::now() + Duration::from_millis(500))
                        .is_some()
                    {}
                    let elapsed = self.started.elapsed();
                    let test = std::thread::current().name().unwrap_or("?").to_owned();
                    println!(
                        "{test}: scenario {} finished in {:.2} s (exit status {})",
                        self.scenario,
                        elapsed.as_secs_f64(),
                        status.code().unwrap_or(-1)
                    );
                    if std::env::var_os(SHOW_TRANSCRIPT).is_some() {
                        self.print_transcript();
                    }
                    return status.code().unwrap_or(-1);
                }
                Ok(None) if Instant::now() < deadline => {
                    while self
                        .lines
                        .try_recv()
                        .map(|line| self.transcript.push(line))
                        .is_ok()
                    {}
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => self.fail(&format!("QEMU still running after {SCENARIO_BUDGET:?}")),
                Err(error) => self.fail(&format!("waiting for QEMU failed: {error}")),
            }
        }
    }

    /// Waits for the exit and asserts its status.
    pub fn expect_exit(&mut self, expected: i32) {
        let status = self.wait_for_exit();
        if status != expected {
            self.fail(&format!("QEMU exit status {status}, expected {expected}"));
        }
    }

    fn print_transcript(&mut self) {
        println!("--- serial transcript ({}) ---", self.scenario);
        for line in &self.transcript {
            println!("{line}");
        }
        if let Some(channel) = self.migration.as_mut() {
            channel.drain();
            println!("--- migration channel ({}) ---", self.scenario);
            for line in channel.transcript() {
                println!("{line}");
            }
        }
        println!("---");
    }

    /// Every serial line received so far.
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }

    /// Fails the test, showing the serial transcript.
    pub fn fail(&mut self, message: &str) -> ! {
        let elapsed = self.started.elapsed().as_secs_f64();
        let _ = self.child.kill();
        let _ = self.child.wait();
        while self
            .lines
            .try_recv()
            .map(|line| self.transcript.push(line))
            .is_ok()
        {}
        let stderr = self
            .stderr
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        let channel = self
            .migration
            .as_mut()
            .map(|channel| {
                channel.drain();
                format!(
                    "--- migration channel ---\n{}\n",
                    channel.transcript().join("\n")
                )
            })
            .unwrap_or_default();
        panic!(
            "{message}\n--- serial transcript ({} after {elapsed:.2} s) ---\n{}\n{channel}--- QEMU stderr ---\n{stderr}---",
            self.scenario,
            self.transcript.join("\n")
        );
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

/// Arguments of QEMU's `mce` monitor command.
#[derive(Clone, Copy, Debug)]
pub struct Injection {
    /// `-b`: also raise a machine check on every other CPU.
    pub broadcast: bool,
    /// Target CPU index (= APIC ID = the kernel's CPU number).
    pub cpu: u32,
    /// Bank number.
    pub bank: u32,
    /// `MCi_STATUS`.
    pub status: u64,
    /// `MCG_STATUS`.
    pub mcg_status: u64,
    /// `MCi_ADDR`.
    pub addr: u64,
    /// `MCi_MISC`.
    pub misc: u64,
}

impl Injection {
    /// An SRAR data-load memory error (VAL|UC|EN|MISCV|ADDRV|S|AR, MCACOD 0x134) in bank 1
    /// with `MCG_STATUS` = RIPV|EIPV|MCIP, at host address `addr`.
    pub fn srar(cpu: u32, addr: u64) -> Self {
        Self {
            broadcast: false,
            cpu,
            bank: 1,
            status: 0xBD80_0000_0000_0134,
            mcg_status: 0x7,
            addr,
            misc: 0x86,
        }
    }

    /// An SRAO patrol-scrub error (VAL|UC|EN|MISCV|ADDRV|S, MCACOD 0x00CF, MSCOD 0x0040) in
    /// bank 9 with `MCG_STATUS` = RIPV|MCIP, at host address `addr`.
    pub fn srao(cpu: u32, addr: u64) -> Self {
        Self {
            broadcast: false,
            cpu,
            bank: 9,
            status: 0xBD00_0000_0040_00CF,
            mcg_status: 0x5,
            addr,
            misc: 0x86,
        }
    }

    /// An uncorrected error with no address (VAL|UC), as QEMU's `mce -b` raises on the other
    /// CPUs: `MCG_STATUS` = RIPV|MCIP, a #MC the host keeps (UCNA).
    pub fn ucna(cpu: u32, bank: u32) -> Self {
        Self {
            broadcast: false,
            cpu,
            bank,
            status: 0xA000_0000_0000_0000,
            mcg_status: 0x5,
            addr: 0,
            misc: 0,
        }
    }

    /// A corrected memory-read error (VAL|EN|MISCV|ADDRV, MCACOD 0x0090) in `bank`: QEMU logs
    /// it in the bank and raises no #MC.
    pub fn corrected(cpu: u32, bank: u32, addr: u64) -> Self {
        Self {
            broadcast: false,
            cpu,
            bank,
            status: 0x9C00_0000_0000_0090,
            mcg_status: 0,
            addr,
            misc: 0x86,
        }
    }

    /// An AMD uncorrected error from consuming poison (VAL|UC|EN|ADDRV|POISON, MSCOD 0x1F,
    /// MCACOD 0x0136) in bank 4, `MCG_STATUS` = RIPV|EIPV|MCIP.
    pub fn amd_uncorrected(cpu: u32, addr: u64) -> Self {
        Self {
            broadcast: false,
            cpu,
            bank: 4,
            status: 0xB400_0800_001F_0136,
            mcg_status: 0x7,
            addr,
            misc: 0,
        }
    }

    /// The QEMU monitor command: `mce [-b] cpu bank status mcg_status addr misc`.
    pub fn monitor_command(&self) -> String {
        format!(
            "mce {}{} {} {:#x} {:#x} {:#x} {:#x}",
            if self.broadcast { "-b " } else { "" },
            self.cpu,
            self.bank,
            self.status,
            self.mcg_status,
            self.addr,
            self.misc
        )
    }

    /// The same injection with `-b`.
    pub fn broadcast(self) -> Self {
        Self {
            broadcast: true,
            ..self
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) that QEMU's readline emits.
fn strip_terminal_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(character) = chars.next() {
        if character != '\u{1b}' {
            plain.push(character);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    plain
}
