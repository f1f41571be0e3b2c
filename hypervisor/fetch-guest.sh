#!/usr/bin/env bash
# Fetches the guest for the SVM hypervisor's QEMU tests: Debian's generic (not `cloud`)
# linux-image-6.1 for amd64 and busybox-static, with the ordinary Debian client.
#   - vmlinux: the ELF extracted from the package's xz-packed vmlinuz (it carries the PVH note)
#   - initrd.gz: a busybox initramfs whose /init is hypervisor/guest/init
# Cache: ${VMCE_LINUX_CACHE:-~/.cache/vmce-linux}, outside the repository. Prints the cache
# directory on its last line. Fails loudly (non-zero exit, a message on stderr) when anything
# is missing; never falls back to another guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VMCE_LINUX_CACHE:-$HOME/.cache/vmce-linux}
mkdir -p "$cache"
cd "$cache"
die() { echo "fetch-guest.sh: $*" >&2; exit 1; }

if [ ! -s vmlinux ] || [ ! -x bb/bin/busybox ]; then
  command -v apt-get >/dev/null || die "apt-get is needed to fetch Debian's kernel"
  command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack Debian's kernel"
  command -v python3 >/dev/null || die "python3 is needed to unpack vmlinuz and pack the initramfs"
  apt-get update -qq >/dev/null 2>&1 || echo "fetch-guest.sh: apt-get update failed, trying the lists we have" >&2
  # The generic flavour: `cloud` has CONFIG_X86_MCE unset.
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6\.1[^ ]*-amd64$/{print $2; exit}')
  [ -n "$pkg" ] || die "cannot resolve Debian's generic linux-image-6.1 amd64 package (apt-cache depends linux-image-amd64)"
  rm -f ./*.deb
  apt-get download "$pkg" busybox-static >/dev/null || die "apt-get download $pkg busybox-static failed"
  ls "$pkg"_*.deb busybox-static_*.deb >/dev/null || die "downloaded packages not found"
  rm -rf boot bb
  dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './boot/vmlinuz-*' './boot/config-*' \
    || die "cannot unpack $pkg"
  grep -q '^CONFIG_X86_MCE=y' boot/config-* || die "$pkg lacks CONFIG_X86_MCE=y"
  grep -q '^CONFIG_X86_MCE_INTEL=y' boot/config-* || die "$pkg lacks CONFIG_X86_MCE_INTEL=y"
  grep -q '^CONFIG_MEMORY_FAILURE=y' boot/config-* || die "$pkg lacks CONFIG_MEMORY_FAILURE=y"
  grep -q '^CONFIG_PVH=y' boot/config-* || die "$pkg lacks CONFIG_PVH=y"
  python3 - boot/vmlinuz-* <<'PY' || die "cannot extract vmlinux from vmlinuz"
import lzma, sys
data = open(sys.argv[1], 'rb').read()
start = data.find(b'\xfd7zXZ\x00')
if start < 0:
    sys.exit('no xz stream in ' + sys.argv[1])
elf = lzma.LZMADecompressor().decompress(data[start:])
if elf[:4] != b'\x7fELF':
    sys.exit('the xz stream is not an ELF')
open('vmlinux.tmp', 'wb').write(elf)
PY
  mv vmlinux.tmp vmlinux
  dpkg-deb -x busybox-static_*.deb bb || die "cannot unpack busybox-static"
  [ -x bb/bin/busybox ] || die "busybox-static has no bin/busybox"
  echo "$pkg" > kernel-package
  rm -f ./*.deb
fi

# The initramfs is rebuilt every time (cheap) so that edits to guest/init take effect.
python3 - "$cache/bb/bin/busybox" "$here/guest/init" "$cache/initrd.gz" <<'PY' || die "cannot pack the initramfs"
import gzip, os, sys
busybox, init, out = sys.argv[1:4]
entries = []  # (name, mode, data)
for d in ('bin', 'dev', 'proc', 'sys', 'tmp'):
    entries.append((d, 0o040755, b''))
entries.append(('bin/busybox', 0o100755, open(busybox, 'rb').read()))
entries.append(('init', 0o100755, open(init, 'rb').read()))
def rec(ino, name, mode, data):
    name_b = name.encode() + b'\0'
    hdr = b'070701' + b''.join(b'%08X' % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
    pad = lambda n: b'\0' * ((4 - n % 4) % 4)
    return hdr + name_b + pad(len(hdr) + len(name_b)) + data + pad(len(data))
blob = b''.join(rec(i + 1, *e) for i, e in enumerate(entries)) + rec(0, 'TRAILER!!!', 0, b'')
with gzip.open(out, 'wb') as f:
    f.write(blob)
PY
echo "$cache"
