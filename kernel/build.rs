//! Passes the kernel linker script, and only for the bare-metal target: host builds of the
//! crate (library, tests, clippy) never see it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=arch/boot/linker.ld");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/arch/boot/linker.ld");
    }
}
