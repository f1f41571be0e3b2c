//! Spectre v1, checked in the machine code: the guest-chosen bank of an MCA MSR reaches the
//! register arrays only through `nospec`'s `cmp`/`sbb` mask.
//!
//! `src/emulate.rs` tests that the clamp's arithmetic keeps every bank in range. That is
//! not enough: the clamp used to be plain Rust (`(index - len) >> 63`), and next to the
//! bounds check it guards the optimizer proved it redundant and removed it. The release
//! `rdmsr` of `MCi_STATUS` was `cmp bank, 1; ja out; load [base + 24 * bank]`, which a
//! mispredicted `ja` runs with any bank up to 31. This test builds
//! `examples/nospec_probe.rs` in release, with the exit handler's calls inlined as a
//! hypervisor gets them, and reads its assembly: both probes must carry the mask, as inline
//! assembly the optimizer cannot fold, and must not call out to code this test cannot see.

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the probe in release and returns its assembly.
fn probe_assembly() -> String {
    let target_dir = manifest_dir().join("target").join("nospec-probe");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(manifest_dir())
        .args(["rustc", "--release", "--example", "nospec_probe", "--"])
        .args(["--emit", "asm,link", "-C", "codegen-units=1"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "building the probe failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let examples = target_dir.join("release").join("examples");
    let newest = std::fs::read_dir(&examples)
        .expect("examples directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| is_probe_assembly(path))
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok())
        .expect("cargo wrote the probe's assembly");
    std::fs::read_to_string(newest).expect("read the assembly")
}

fn is_probe_assembly(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "s")
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("nospec_probe-"))
}

/// The instructions of `function`, from its label to the end of its CFI frame.
fn body<'a>(assembly: &'a str, function: &str) -> Vec<&'a str> {
    let label = format!("{function}:");
    let lines: Vec<&str> = assembly.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.trim() == label)
        .unwrap_or_else(|| panic!("{function} is not in the assembly"));
    lines[start + 1..]
        .iter()
        .take_while(|line| !line.contains(".cfi_endproc"))
        .map(|line| line.trim())
        .collect()
}

/// The inline-assembly blocks (between `#APP` and `#NO_APP`) that compute a mask with
/// `cmp` then `sbb`.
fn mask_blocks(body: &[&str]) -> usize {
    let mut count = 0;
    let mut block: Option<Vec<&str>> = None;
    for line in body {
        match (
            line.starts_with("#APP"),
            line.starts_with("#NO_APP"),
            &mut block,
        ) {
            (true, _, _) => block = Some(Vec::new()),
            (_, true, Some(instructions)) => {
                let mnemonics: Vec<&str> = instructions
                    .iter()
                    .filter_map(|line| line.split_whitespace().next())
                    .collect();
                if mnemonics.iter().any(|m| m.starts_with("cmp"))
                    && mnemonics.iter().any(|m| m.starts_with("sbb"))
                {
                    count += 1;
                }
                block = None;
            }
            (_, _, Some(instructions)) if !line.is_empty() => instructions.push(line),
            _ => {}
        }
    }
    count
}

#[test]
#[cfg(target_arch = "x86_64")]
fn guest_indexed_paths_carry_the_mask_in_machine_code() {
    let assembly = probe_assembly();
    // rdmsr: MCi_STATUS/ADDR/MISC and MCi_CTL2 each index an array with the guest's bank.
    // wrmsr: clearing a bank register and storing MCi_CTL2 do.
    for (function, paths) in [("vmce_probe_rdmsr", 2), ("vmce_probe_wrmsr", 2)] {
        let body = body(&assembly, function);
        let calls: Vec<&&str> = body
            .iter()
            .filter(|line| line.starts_with("call"))
            .collect();
        assert!(
            calls.is_empty(),
            "{function} calls out, so its indexing is not all here: {calls:?}"
        );
        let masks = mask_blocks(&body);
        assert!(
            masks >= paths,
            "{function}: {masks} cmp/sbb mask blocks for {paths} guest-indexed paths:\n{}",
            body.join("\n")
        );
    }
}
