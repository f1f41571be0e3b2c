#!/usr/bin/env bash
# Manual run: ./run-qemu.sh SCENARIO VCPUS [PROFILE 0=Intel 1=AMD] [TIMEOUT]. Builds nothing;
# tests/linux.rs is the harness that builds, runs and judges.
set -euo pipefail
cd "$(dirname "$0")"
cache=$(./fetch-guest.sh | tail -1)
kernel=target/x86_64-unknown-none/release/vmce-svm-hypervisor
isz=$(stat -c %s "$cache/initrd.gz")
exec timeout "${4:-120}" nice -n 19 qemu-system-x86_64 -machine q35 -cpu max -smp "$2" -m 1024 \
  -display none -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$kernel" \
  -device loader,file="$cache/vmlinux",addr=0x20000000,force-raw=on \
  -device loader,file="$cache/initrd.gz",addr=0x28000000,force-raw=on \
  -device loader,addr=0x27ffffe0,data="$1",data-len=8 \
  -device loader,addr=0x27ffffe8,data="$2",data-len=8 \
  -device loader,addr=0x27fffff0,data="${3:-0}",data-len=8 \
  -device loader,addr=0x27fffff8,data="$isz",data-len=8
