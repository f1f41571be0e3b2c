//! Compiles `tests/c/flow.c` against `include/vmce.h` and the static library with gcc, then
//! (1) checks that every size, alignment, offset and constant the C side sees is the Rust
//! side's, and (2) runs the README's integration flow from C and checks the story it tells.
//!
//! The static library is the one cargo built for this test (see [`static_library`]); gcc
//! must be installed.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use vmce_capi::*;

/// The static library cargo built for this test: `target/<profile>/deps/libvmce_capi-<hash>.a`
/// beside this test binary (`cargo test` does not copy it up to `target/<profile>/` as
/// `cargo build` does, so that copy may be stale). The compile that writes the `.rlib` this
/// test links writes the `.a` beside it; when other builds left several, the newest is it.
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let newest = std::fs::read_dir(deps)
        .expect("read deps/")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libvmce_capi-") && name.ends_with(".a"))
        })
        .max_by_key(|path| {
            std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .expect("mtime")
        });
    newest.unwrap_or_else(|| panic!("no libvmce_capi-*.a in {}", deps.display()))
}

/// The compiled C program (built once per test run).
fn flow_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmce-capi-flow");
        let status = Command::new("gcc")
            .args([
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-O1",
            ])
            .arg("-I")
            .arg(manifest.join("include"))
            .arg(manifest.join("tests/c/flow.c"))
            .arg(static_library())
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&out)
            .status()
            .expect("gcc is installed");
        assert!(status.success(), "gcc failed to build tests/c/flow.c");
        out
    })
}

fn run(arg: &str) -> String {
    let output = Command::new(flow_binary())
        .arg(arg)
        .output()
        .expect("run flow");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        output.status.success(),
        "flow {arg} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// What the Rust side says every name of the C program's ABI table is.
fn rust_abi() -> BTreeMap<String, i128> {
    let mut abi = BTreeMap::new();
    let mut put = |name: String, value: i128| {
        abi.insert(name, value);
    };
    macro_rules! size {
        ($c:literal, $t:ty) => {
            put(format!("sizeof({})", $c), size_of::<$t>() as i128);
            put(format!("alignof({})", $c), align_of::<$t>() as i128);
        };
    }
    macro_rules! off {
        ($c:literal, $t:ty, $f:ident) => {
            put(
                format!("offsetof({}.{})", $c, stringify!($f)),
                offset_of!($t, $f) as i128,
            );
        };
    }
    macro_rules! constant {
        ($($c:ident),* $(,)?) => {
            $(put(stringify!($c).to_string(), $c as i128);)*
        };
    }
    size!("vmce_domain", VmceDomain);
    size!("vmce_host_caps", vmce_host_caps);
    size!("vmce_msr_ops", vmce_msr_ops);
    size!("vmce_host_bank", vmce_host_bank);
    size!("vmce_host_mce", vmce_host_mce);
    size!("vmce_classification", vmce_classification);
    size!("vmce_guest_memory", vmce_guest_memory);
    size!("vmce_guest_mce", vmce_guest_mce);
    size!("vmce_vcpu_outcome", vmce_vcpu_outcome);
    size!("vmce_guest_cpus", vmce_guest_cpus);
    size!("vmce_injection_report", vmce_injection_report);
    off!("vmce_host_caps", vmce_host_caps, mcg_cap);
    off!("vmce_msr_ops", vmce_msr_ops, write);
    off!("vmce_host_bank", vmce_host_bank, misc);
    off!("vmce_host_mce", vmce_host_mce, banks);
    off!("vmce_classification", vmce_classification, bank);
    off!("vmce_classification", vmce_classification, text);
    off!("vmce_guest_mce", vmce_guest_mce, guest_addr);
    off!("vmce_guest_mce", vmce_guest_mce, misc);
    off!("vmce_vcpu_outcome", vmce_vcpu_outcome, with_data);
    off!("vmce_vcpu_outcome", vmce_vcpu_outcome, overflow);
    off!("vmce_guest_cpus", vmce_guest_cpus, notify);
    off!("vmce_injection_report", vmce_injection_report, downgraded);
    off!("vmce_injection_report", vmce_injection_report, overflow);
    off!("vmce_injection_report", vmce_injection_report, text);
    put("vmce_domain_size()".into(), vmce_domain_size() as i128);
    put("vmce_domain_align()".into(), vmce_domain_align() as i128);
    constant!(
        VMCE_OK,
        VMCE_ERR_NULL,
        VMCE_ERR_INVALID,
        VMCE_ERR_ALIGN,
        VMCE_ERR_PROFILE,
        VMCE_ERR_VCPU_COUNT,
        VMCE_ERR_NO_SUCH_VCPU,
        VMCE_ERR_NOT_TRANSLATED,
        VMCE_ERR_ADDRESS,
        VMCE_ERR_BUFFER_TOO_SMALL,
        VMCE_ERR_WOULD_LOSE,
        VMCE_ERR_RECORD,
        VMCE_ERR_RESTORE,
        VMCE_ERR_NOT_INITIALIZED,
        VMCE_MAX_VCPUS,
        VMCE_NO_VCPU,
        VMCE_DOMAIN_SIZE,
        VMCE_DOMAIN_ALIGN,
        VMCE_HOST_BANKS,
        VMCE_TEXT_BYTES,
        VMCE_XEN_RECORD_BYTES,
        VMCE_VENDOR_INTEL,
        VMCE_VENDOR_AMD,
        VMCE_PROFILE_INTEL,
        VMCE_PROFILE_INTEL_LMCE,
        VMCE_PROFILE_AMD,
        VMCE_MSR_HANDLED,
        VMCE_MSR_NOT_OURS,
        VMCE_MSR_RAISE_GP,
        VMCE_DISPOSITION_REFLECT,
        VMCE_DISPOSITION_HOST_ONLY,
        VMCE_DISPOSITION_FATAL,
        VMCE_DISPOSITION_NONE,
        VMCE_CLASS_SRAO_MEMORY_SCRUB,
        VMCE_CLASS_SRAR_DATA_LOAD,
        VMCE_CLASS_SRAR_INSTRUCTION_FETCH,
        VMCE_CLASS_AMD_UNCORRECTED,
        VMCE_CLASS_NONE,
        VMCE_OUTCOME_DELIVERED,
        VMCE_OUTCOME_SKIPPED,
        VMCE_OUTCOME_SHUTDOWN,
        VMCE_OUTCOME_OTHER,
        VMCE_SHUTDOWN_NONE,
        VMCE_SHUTDOWN_MCIP,
        VMCE_SHUTDOWN_MCE_DISABLED,
        VMCE_SHUTDOWN_OTHER,
        VMCE_MODE_BROADCAST,
        VMCE_MODE_LOCAL,
        VMCE_MODE_SINGLE,
        VMCE_MODE_OTHER,
        VMCE_DOWNGRADE_NONE,
        VMCE_DOWNGRADE_NO_CONSUMER,
        VMCE_DOWNGRADE_CONSUMER_NOT_UP,
        VMCE_DOWNGRADE_OTHER,
        VMCE_XEN_4_2,
        VMCE_XEN_4_3,
        VMCE_XEN_4_10,
        VMCE_NATIVE_V1,
        VMCE_NATIVE_V2,
        VMCE_LOSS_REFUSE,
        VMCE_LOSS_ALLOW,
    );
    abi
}

/// The C program's "abi NAME VALUE" lines. C prints `VMCE_NO_VCPU` and friends (unsigned
/// 0xFFFFFFFF) through `long long`, so they arrive as their unsigned value.
fn c_abi() -> BTreeMap<String, i128> {
    run("abi")
        .lines()
        .filter_map(|line| line.strip_prefix("abi "))
        .map(|rest| {
            let (name, value) = rest.rsplit_once(' ').expect("abi NAME VALUE");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn header_and_rust_agree_on_every_size_offset_and_constant() {
    let rust = rust_abi();
    let c = c_abi();
    let mismatches: Vec<String> = rust
        .iter()
        .filter(|(name, value)| c.get(*name) != Some(value))
        .map(|(name, value)| format!("{name}: Rust {value}, C {:?}", c.get(name)))
        .chain(
            c.keys()
                .filter(|name| !rust.contains_key(*name))
                .map(|name| format!("{name}: only in C")),
        )
        .collect();
    assert!(
        mismatches.is_empty(),
        "vmce.h and the Rust side disagree:\n{}",
        mismatches.join("\n")
    );
}

fn assert_lines(story: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            story.lines().any(|have| have == *line),
            "missing line {line:?} in:\n{story}"
        );
    }
}

#[test]
fn c_walks_the_srar_flow() {
    let story = run("srar");
    assert_lines(
        &story,
        &[
            "rdmsr MCG_CAP on vCPU 1: handled, 0x1000c02",
            "rdmsr 0x10 (TSC) on vCPU 1: not ours",
            "wrmsr MC1_STATUS=1 on vCPU 1: #GP(0)",
            "host #MC: MCG_STATUS 0x7, 1 valid bank(s); released: bank 9 status 0, MCG_STATUS 0",
            "class: reflect: SRAR data load (action required)",
            "owner: guest \"web-1\"; host 0x4123abc -> guest 0x123abc",
            "  kick vCPU 0: #MC pending, MCIP|RIPV only",
            "  kick vCPU 2: #MC pending, bank 1 holds the error",
            "  kick vCPU 3: not up, skipped",
            "delivery: broadcast to every vCPU, data on vCPU 2, 3 delivered, 1 skipped, 0 to shut down",
            "report: delivered 3, skipped 1, shutdown 0, data vCPU 2",
            "save Xen 4.10, refusing loss: refused (a #MC in flight would be lost)",
            "save native V2 into 4 bytes: buffer too small",
            "restore of a truncated stream: refused, nothing changed",
            "  vCPU 0: #MC (vector 18), MCG_STATUS=0x5, banks empty (joins the rendezvous), MCIP cleared: handled",
            "  vCPU 2: #MC (vector 18), MCG_STATUS=0x7, bank 1 status=0xbd80000000000134 addr=0x123abc, MCIP cleared: handled",
            "  vCPU 3: not up, skipped (no shutdown)",
            "after the handler: saved as Xen 4.10 allowing loss (160 bytes, dropped 0x8), restored into the source",
            "vmce_take_pending on a vCPU the domain lacks: -6",
            "vmce_rdmsr after destroy: -13",
        ],
    );
}

#[test]
fn c_walks_the_srao_lmce_and_amd_flows() {
    assert_lines(
        &run("srao"),
        &[
            "delivery: broadcast to every vCPU, data on vCPU 0, 3 delivered, 1 skipped, 0 to shut down",
            "  vCPU 0: #MC (vector 18), MCG_STATUS=0x5, bank 1 status=0xbd000000000000cf addr=0x123abc, MCIP cleared: handled",
        ],
    );
    assert_lines(
        &run("lmce"),
        &[
            "delivery: local (LMCE) to one vCPU, data on vCPU 2, 1 delivered, 0 skipped, 0 to shut down",
            "  vCPU 1: nothing, runs on",
            "  vCPU 2: #MC (vector 18), MCG_STATUS=0xf, bank 1 status=0xbd80000000000134 addr=0x123abc, MCIP cleared: handled",
        ],
    );
    assert_lines(
        &run("amd"),
        &[
            "delivery: single vCPU, data on vCPU 2, 1 delivered, 0 skipped, 0 to shut down",
            "  vCPU 0: nothing, runs on",
            "  vCPU 2: #MC (vector 18), MCG_STATUS=0x7, bank 1 status=0xb400080000000136 addr=0x123abc, MCIP cleared: handled",
        ],
    );
}
