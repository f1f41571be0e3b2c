#!/usr/bin/env bash
# What the QEMU demo and the QEMU-booted tests need on a fresh machine, installed when missing:
# the pinned toolchain with its bare-metal target (rust-toolchain.toml) and qemu-system-x86.
# Run by scripts/test.sh and by the demo (cargo run -p vmce-qemu-harness --example qemu_demo,
# through vmce_qemu_harness::set_up); each finds what is already there and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target add x86_64-unknown-none >/dev/null
rustup component add clippy rustfmt >/dev/null

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "setup: installing qemu-system-x86 (apt-get)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq qemu-system-x86 >/dev/null
    fi
fi
