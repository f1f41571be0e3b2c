//! Host-side harness: builds the test kernel (package `vmce-test-kernel`, `kernel/`), runs it
//! under QEMU, reads its serial lines and drives the QEMU monitor (machine-check injection).
//! Its suites are `tests/scenarios.rs` and `tests/migration.rs`; `examples/qemu_demo.rs` tells
//! one machine check's story. What the kernel and the harness say to each other (scenarios,
//! boot arguments, exit codes, console and migration-channel words) is
//! [`vmce_qemu_protocol`]'s.
//!
//! - The kernel is built once per process ([`kernel`]) by a nested cargo with its own
//!   target directory (`target/qemu-kernel`), so it never waits on the outer cargo's lock.
//! - Each [`Qemu`] is one virtual machine: `-serial stdio` (read by a thread, line by line),
//!   `-monitor unix:<socket>`, `isa-debug-exit` for the exit status. Dropping it kills QEMU.
//! - Machines run one at a time (a process-wide lock held by each [`Qemu`]): the host has
//!   two cores and each machine has four TCG vCPUs, and the timings stay meaningful.
//! - A missing `qemu-system-x86_64` is a failure, never a skip. The demo installs it first
//!   ([`set_up`], `scripts/setup.sh`), as `scripts/test.sh` does before the suites.
//! - Nothing here depends on how fast the host runs the machine: a test waits for the line
//!   (or, for a state the kernel cannot print without leaving it, the memory cell read
//!   through the monitor: [`Qemu::wait_for_physical_u32`]) that says the machine is where an
//!   injection needs it, and the deadlines ([`LINE_TIMEOUT`], [`SCENARIO_BUDGET`]) only
//!   catch a machine that hangs.
//! - The Linux suite (`tests/linux.rs`, module [`linux`]) boots Debian's stock Linux on the
//!   SVM hypervisor (`hypervisor/`) instead, and judges by Linux's own console lines.
//! - A machine whose scenario uses it ([`Scenario::uses_migration_channel`]) also has a
//!   second serial port (COM2) on a socket chardev, the migration channel ([`channel`]).

pub mod channel;
pub mod linux;

use channel::{MigrationChannel, RecordStream};
pub use vmce_qemu_protocol::{ExitCode, Scenario};
use vmce_qemu_protocol::{boot_args, console, debug_exit};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Longest any scenario may take, from QEMU start to its exit.
pub const SCENARIO_BUDGET: Duration = Duration::from_secs(15);
/// Set this environment variable to see every machine's serial transcript (and migration
/// channel) after it exits: `VMCE_QEMU_TRANSCRIPT=1 cargo test -p vmce-qemu-harness --test
/// migration -- --nocapture`.
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
/// The kernel's package, and its binary.
const KERNEL_PACKAGE: &str = "vmce-test-kernel";

/// Host address 0x4123abc is guest RAM: guest frame 0x123 (guest frame g = host frame
/// g + 0x4000), page offset kept ([`GUEST_ADDR`]).
pub const HOST_ADDR: u64 = 0x0412_3ABC;
/// [`HOST_ADDR`] as the guest sees it.
pub const GUEST_ADDR: u64 = 0x0012_3ABC;

static MACHINE_LOCK: Mutex<()> = Mutex::new(());
static MACHINE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The workspace root (the kernel is built from there, so that its `.cargo/config.toml`
/// applies).
fn workspace_dir() -> PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.parent().unwrap_or(harness).to_path_buf()
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
    let workspace = workspace_dir();
    let target_dir = workspace.join("target").join("qemu-kernel");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--target", KERNEL_TARGET])
        .args(["--package", KERNEL_PACKAGE])
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
            "building {KERNEL_PACKAGE} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = target_dir
        .join(KERNEL_TARGET)
        .join("release")
        .join(KERNEL_PACKAGE);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("cargo succeeded but {} is missing", path.display()))
    }
}

/// Fresh-machine set-up for the demo, as `scripts/test.sh` does it: runs `scripts/setup.sh`,
/// which installs the pinned toolchain's bare-metal target and `qemu-system-x86` when they
/// are missing (apt-get, through sudo unless root) and does nothing otherwise. The test
/// suites do not call it: `scripts/test.sh` runs the script first, and a QEMU still missing
/// after that fails the tests ([`Qemu::start`]).
///
/// # Panics
/// When the script cannot be run or fails (its own messages are on stderr).
pub fn set_up() {
    let script = workspace_dir().join("scripts").join("setup.sh");
    match Command::new(&script).current_dir(workspace_dir()).status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "{} failed ({status}): the demo needs the x86_64-unknown-none target and {QEMU}",
            script.display()
        ),
        Err(error) => panic!("cannot run {}: {error}", script.display()),
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
    boot_args: BootArgs,
    started: Instant,
    _exclusive: MutexGuard<'static, ()>,
}

/// A machine's kernel command line (QEMU's `-append`): the scenario and any other
/// [`boot_args`].
#[derive(Clone, Debug)]
pub struct BootArgs {
    scenario: Option<Scenario>,
    line: String,
}

impl BootArgs {
    /// `scenario=<scenario>`.
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario: Some(scenario),
            line: format!("{}={scenario}", boot_args::SCENARIO),
        }
    }

    /// `scenario=<name>` for a name that is no [`Scenario`] (the kernel must refuse it).
    pub fn unknown_scenario(name: &str) -> Self {
        assert_eq!(Scenario::parse(name), None, "{name} is a scenario");
        Self {
            scenario: None,
            line: format!("{}={name}", boot_args::SCENARIO),
        }
    }

    /// Adds `host-mces=<count>`: the run ends only after `count` host machine checks.
    pub fn host_machine_checks(self, count: u32) -> Self {
        self.with(boot_args::HOST_MACHINE_CHECKS, &count.to_string())
    }

    /// Adds `touch=<address>`: the guest-physical address the `migrate-dest` guest reads.
    pub fn touch(self, guest_physical: u64) -> Self {
        self.with(boot_args::TOUCH, &format!("{guest_physical:#x}"))
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        self.line = format!("{} {key}={value}", self.line);
        self
    }

    /// Whether the machine needs the migration channel.
    fn uses_migration_channel(&self) -> bool {
        self.scenario
            .is_some_and(|scenario| scenario.uses_migration_channel())
    }
}

impl From<Scenario> for BootArgs {
    fn from(scenario: Scenario) -> Self {
        Self::new(scenario)
    }
}

impl Qemu {
    /// Boots the kernel with `-smp 4` on an Intel CPU.
    pub fn start(boot_args: impl Into<BootArgs>) -> Self {
        Self::start_with_cpus(boot_args, 4)
    }

    /// Boots the kernel with `cpus` CPUs on an Intel CPU.
    pub fn start_with_cpus(boot_args: impl Into<BootArgs>, cpus: u32) -> Self {
        Self::start_on(boot_args, cpus, INTEL_CPU)
    }

    /// Boots the kernel with `cpus` CPUs of QEMU model `cpu_model`. When the scenario uses
    /// it, the machine has the migration channel: COM2 on a socket chardev that the harness
    /// is connected to (`-chardev socket,... -serial chardev:migration`).
    pub fn start_on(boot_args: impl Into<BootArgs>, cpus: u32, cpu_model: &str) -> Self {
        let boot_args = boot_args.into();
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
            .arg("-device")
            .arg(format!(
                "isa-debug-exit,iobase={:#x},iosize={:#x}",
                debug_exit::PORT,
                debug_exit::SIZE
            ))
            .args(["-serial", "stdio"]);
        let migration_channel = boot_args.uses_migration_channel();
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
            .args(["-append", &boot_args.line])
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
            boot_args,
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
                        "{test}: {} finished in {:.2} s (exit status {})",
                        self.boot_args.line,
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

    /// Waits for the exit and asserts that the kernel stopped the machine with `expected`.
    pub fn expect_exit(&mut self, expected: ExitCode) {
        let status = self.wait_for_exit();
        if ExitCode::from_qemu_status(status) != Some(expected) {
            self.fail(&format!(
                "QEMU exit status {status}, expected {} ({expected:?})",
                expected.qemu_status()
            ));
        }
    }

    /// Waits until every guest runs: `READY cpus=<vcpus>`.
    pub fn wait_until_ready(&mut self, vcpus: u32) {
        self.wait_for_line(&format!("{} cpus={vcpus}", console::READY));
    }

    /// Waits until the kernel says every guest finished (`DONE`), then for the successful
    /// exit.
    pub fn expect_done(&mut self) {
        self.wait_for_line(console::DONE);
        self.expect_exit(ExitCode::Success);
    }

    /// Waits until each of vCPUs `0..vcpus` has completed round `round` of its
    /// machine-check handler: the rendezvous, then `MCIP` cleared.
    pub fn assert_rendezvous(&mut self, vcpus: u32, round: u32) {
        for vcpu in 0..vcpus {
            self.wait_for_line(&vcpu_line(vcpu, &format!("RENDEZVOUS OK round={round}")));
            self.wait_for_line(&vcpu_line(
                vcpu,
                &format!("MC-DONE round={round} mcg_status=0x0"),
            ));
        }
    }

    fn print_transcript(&mut self) {
        println!("--- serial transcript ({}) ---", self.boot_args.line);
        for line in &self.transcript {
            println!("{line}");
        }
        if let Some(channel) = self.migration.as_mut() {
            channel.drain();
            println!("--- migration channel ({}) ---", self.boot_args.line);
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
            self.boot_args.line,
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

/// The line vCPU `vcpu`'s guest prints as `text`: `VCPU <vcpu> <text>`.
pub fn vcpu_line(vcpu: u32, text: &str) -> String {
    format!("{} {vcpu} {text}", console::VCPU)
}

/// What the guest on `vcpu` reports for a machine check carrying the error in bank 1.
pub fn data_line(vcpu: u32, mcg_status: u64, status: u64, addr: u64, misc: u64) -> String {
    vcpu_line(
        vcpu,
        &format!(
            "MC mcg_status={mcg_status:#x} bank1 status={status:#x} addr={addr:#x} misc={misc:#x}"
        ),
    )
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
