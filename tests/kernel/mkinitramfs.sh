#!/usr/bin/env bash
# Builds the gzip'd cpio initramfs that tests/real_kernel.rs boots (adapted from
# ../shared/tsem-kernel/mkinitramfs.sh, kept here so the tests control it).
#
#   usage: mkinitramfs.sh TSEM_STREAM_BINARY SCENARIO_DIR OUT.cpio.gz
#
# Contents: busybox-static with the applets the scenarios use, bash and grep from the host with their shared
# libraries, the tsem-stream binary under test (stripped when `strip` exists: the release binary carries debug
# information, tens of MiB the guest would unpack at every boot), every scenario script of SCENARIO_DIR
# (*.sh except this file) under /scenarios/, and an /init that
#   1. mounts proc, sysfs, securityfs, devtmpfs and /tmp,
#      and, with `tsem_early=1` on the kernel command line, runs the shipped contrib/initramfs-tools init-top
#      script (installed with its init-bottom twin under /scripts/, as initramfs-tools does, with
#      contrib/host.env as /etc/tsem-stream/host.env plus a model to learn),
#   2. mounts /dev/vda (ext4: files there hash their content; the initramfs is a pseudo filesystem for TSEM
#      and all its files hash as the empty file) on /root when present,
#   3. runs /scenarios/NAME.sh for the `scenario=NAME` of the kernel command line, between
#      "=== SCENARIO BEGIN" / "=== SCENARIO END rc=N" on the serial console,
#   4. writes /tmp/out (files the scenario left for the test) as a tar archive onto the raw disk /dev/vdb
#      when present, and powers the guest off.
# EXTRA="SRC:/dest/path ..." copies more executables (with their libraries) in; DATA="SRC:/dest/path ..."
# copies plain files.
# Needs Debian's busybox-static (/bin/busybox) and cpio.
set -euo pipefail
bin=$1; scenarios=$2; out=$3
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/local/bin,etc,proc,sys,dev,tmp,root,run,var/lib,scenarios}
cp /bin/busybox "$root/bin/busybox"
for app in sh mount umount mkdir reboot sleep usleep echo printf cat ls sync hostname chmod rm sed head tail wc tr \
           env id awk basename dirname dmesg timeout kill ps cut sort uniq stat cp mv touch date seq diff find \
           xargs true false test [ dd tar mkfifo ln pwd readlink sha256sum expr time nproc uname tee which \
           pidof cmp; do
  ln -sf busybox "$root/bin/$app"
done
copy_with_libs() {
  install -D -m 0755 "$1" "$root$2"
  local lib
  for lib in $(ldd "$1" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' || true); do
    [ -e "$root$lib" ] || install -D -m 0755 "$lib" "$root$lib"
  done
}
copy_with_libs /usr/bin/bash /usr/bin/bash
copy_with_libs /usr/bin/grep /usr/bin/grep
copy_with_libs "$bin" /usr/local/bin/tsem-stream
if command -v strip >/dev/null; then strip "$root/usr/local/bin/tsem-stream"; fi
ln -sf /usr/bin/bash "$root/bin/bash"
ln -sf /usr/bin/grep "$root/bin/grep"
for x in ${EXTRA:-}; do copy_with_libs "${x%%:*}" "${x#*:}"; done
for x in ${DATA:-}; do install -D -m 0644 "${x%%:*}" "$root${x#*:}"; done
for s in "$scenarios"/*.sh; do
  [ "$(basename "$s")" = mkinitramfs.sh ] || install -m 0755 "$s" "$root/scenarios/$(basename "$s")"
done
# The shipped early-start scripts (contrib/initramfs-tools), where initramfs-tools puts them, and the shipped
# configuration with a model to learn (tests/real_kernel.rs, early-start).
contrib=$(cd "$scenarios/../../contrib" && pwd)
for stage in init-top init-bottom; do
  install -D -m 0755 "$contrib/initramfs-tools/scripts/$stage/tsem-stream" "$root/scripts/$stage/tsem-stream"
done
install -D -m 0644 "$contrib/host.env" "$root/etc/tsem-stream/host.env"
echo 'TSEM_STREAM_ARGS="-o /run/tsem-stream/early/host.model"' >>"$root/etc/tsem-stream/host.env"
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo tsem >"$root/etc/hostname"
if [ -f /usr/share/locale/locale.alias ]; then cp /usr/share/locale/locale.alias "$root/etc/locale.alias"; fi
cat >"$root/init" <<'INIT'
#!/bin/sh
export PATH=/usr/local/bin:/usr/bin:/bin:/sbin HOME=/root TERM=dumb SHELL=/bin/bash
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t securityfs securityfs /sys/kernel/security
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /tmp/out
# With tsem_early=1: the whole host's export from here on, by the shipped init-top script, run as
# initramfs-tools runs it (after /proc, /sys and /dev are mounted).
case " $(cat /proc/cmdline) " in *" tsem_early=1 "*) /scripts/init-top/tsem-stream ;; esac
[ -b /dev/vda ] && mount /dev/vda /root
hostname tsem
scenario=
for word in $(cat /proc/cmdline); do
  case "$word" in scenario=*) scenario=${word#scenario=} ;; esac
done
echo "=== SCENARIO BEGIN $scenario"
if [ -n "$scenario" ] && [ -f "/scenarios/$scenario.sh" ]; then
  cd /root && "/scenarios/$scenario.sh"
  rc=$?
else
  echo "no scenario '$scenario' in /scenarios"
  rc=127
fi
cd /
echo "=== SCENARIO END rc=$rc"
[ -b /dev/vdb ] && tar -cf /dev/vdb -C /tmp/out .
sync
if [ -b /dev/vda ] && ! umount /root; then
  echo "processes left behind:"
  ps -o pid,ppid,stat,comm,args
fi
reboot -f
INIT
chmod 0755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
