#!/usr/bin/env bash
# The whole test suite. On a fresh machine it first installs what the tests need
# (scripts/setup.sh): the pinned toolchain with the bare-metal target (rust-toolchain.toml)
# and QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain, bare-metal target and QEMU (scripts/setup.sh, shared with the demo)"
./scripts/setup.sh
# Set-up was attempted: from here a missing QEMU is a failure (set -e), never a skip.
qemu-system-x86_64 --version | head -n 1

step "format"
cargo fmt --all -- --check

step "import circles in src/ (scripts/check-import-circles.py)"
python3 scripts/check-import-circles.py --self-test
python3 scripts/check-import-circles.py src

step "clippy (host: every member, all targets; bare metal: the library, the test kernel, the SVM hypervisor)"
# On the host the test kernel (kernel/) is a stub main; it is the kernel only for the
# bare-metal target, which the last line checks as the harness builds it (release).
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --target x86_64-unknown-none -- -D warnings
cargo clippy --release --target x86_64-unknown-none -p vmce-test-kernel -- -D warnings
cargo clippy --release --target x86_64-unknown-none -p vmce-svm-hypervisor -- -D warnings

step "bare-metal build"
cargo build --target x86_64-unknown-none

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# The fuzz targets build on stable (only running them needs nightly: scripts/fuzz.sh), so they
# are type-checked here and cannot rot. The first run also compiles libFuzzer's C++ (about
# half a minute of CPU); later runs reuse fuzz/target.
step "fuzz targets type-check (stable; run them with scripts/fuzz.sh)"
RUSTFLAGS="-D warnings" cargo check --manifest-path fuzz/Cargo.toml --bins --quiet

step "tests (host: the library; the protocol shared by the test kernel and the harness)"
cargo test
cargo test -p vmce-qemu-protocol

step "C ABI (capi/: the header against the Rust side, the C integration flow built with gcc)"
cargo test -p vmce-capi

# The harness builds the test kernel itself and fails, never skips, without QEMU.
step "QEMU-booted tests (harness/tests/: scenarios.rs, migration.rs, and linux.rs: Debian's Linux 6.1 under hypervisor/, fetched with apt-get download on first use)"
cargo test -p vmce-qemu-harness

step "loom (the lock-free vCPU protocol: tests/loom.rs)"
# The model checker needs the library built with --cfg loom (src/sync.rs swaps in loom's
# atomics and locks), so it gets its own target directory and leaves the normal build alone.
# opt-level 1 runs the models as fast as 3 and builds a fifth quicker.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo test --release --test loom
