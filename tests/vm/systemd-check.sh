#!/usr/bin/env bash
# The sandbox's tests as most Linux users meet them: an ordinary user, logged in (PAM,
# pam_systemd: a session scope, the user's own systemd manager and D-Bus), on a cgroup v2
# machine whose init is systemd. CI's machine is neither (cgroup v1, no systemd init), so
# this boots one: a Debian VM (debootstrap, qemu; KVM where there is one) that runs the
# tests below as that user and powers off. Needs root, debootstrap, qemu-system-x86 and
# e2fsprogs on the host, and Debian's and PyPI's servers once (the image is kept).
#
#   sudo tests/vm/systemd-check.sh [PYTEST ARGS...]   (default: the sandbox's tests)
#
# The working tree is copied in as it is, committed or not. Its exit status is pytest's
# inside the VM, or 3 where the VM cannot be built here (no tools, no mirror, no PyPI);
# the console is in $VM_DIR/console.log, pytest's output in $VM_DIR/check.log.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
vm=${VM_DIR:-/var/tmp/sandbox-runner-vm}
suite=${SUITE:-bookworm}
[ "$#" -gt 0 ] || set -- tests/runner/test_systemd_scope.py tests/runner/test_sandbox.py \
    tests/runner/test_boundary.py tests/runner/test_scopes.py tests/runner/test_cgroup.py
cannot() { echo "systemd-check: cannot build the VM here: $*" >&2; exit 3; }
# The Debian mirror this machine's own apt uses (deb822 .sources or one-line .list files),
# so the VM is built behind whatever mirror the machine is; MIRROR=URL overrides it.
apt_mirror() {
    {
        awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }' \
            /etc/apt/sources.list.d/*.sources 2>/dev/null
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | grep -E '/debian/?$' | head -n 1 || true
}
mirror=${MIRROR:-$(apt_mirror)}
[ -n "$mirror" ] || cannot "no Debian mirror in this machine's apt sources (give one: MIRROR=URL)"
[ "$(id -u)" = 0 ] || cannot "run as root (debootstrap, chroot)"
for tool in debootstrap qemu-system-x86_64 mkfs.ext4 debugfs; do
    command -v "$tool" >/dev/null \
        || cannot "$tool not found (apt-get install debootstrap qemu-system-x86 e2fsprogs)"
done
root=$vm/root
mkdir -p "$vm"

if [ ! -e "$vm/.bootstrapped" ]; then
    echo "systemd-check: installing Debian $suite into $root (once; a few minutes)"
    rm -rf "$root"
    debootstrap --variant=minbase \
        --include=systemd-sysv,udev,dbus,dbus-user-session,libpam-systemd,linux-image-amd64,initramfs-tools,python3,python3-venv,bubblewrap,iproute2,procps,util-linux,ca-certificates \
        "$suite" "$root" "$mirror" > "$vm/debootstrap.log" 2>&1 \
        || cannot "debootstrap failed (its log: $vm/debootstrap.log)"
    touch "$vm/.bootstrapped"
fi

# in the image: the user, the tree, its venv, and the unit that runs the tests at boot
in_root() {  # a private mount namespace: its mounts end with it
    unshare --mount --propagation private sh -c '
        root=$1; shift
        mount --rbind /proc "$root/proc"; mount --rbind /dev "$root/dev"
        mount --rbind /sys "$root/sys"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"  # the host'"'"'s CAs
        exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" "$@"' sh "$root" "$@"
}
in_root sh -c 'id -u tester >/dev/null 2>&1 || useradd --create-home --shell /bin/bash tester'
rm -rf "$root/home/tester/src" && mkdir -p "$root/home/tester/src"
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf -) \
    | tar -xf - -C "$root/home/tester/src"
in_root sh -c 'chown -R tester: /home/tester/src && cd /home/tester && runuser -u tester -- \
    env HOME=/home/tester PIP_DISABLE_PIP_VERSION_CHECK=1 \
    sh -c "[ -x venv/bin/python ] || python3 -m venv venv; venv/bin/pip install -q -e \"src[test]\""' \
    || cannot "the project's venv could not be installed in the image"
printf '%q ' "$@" > "$root/etc/vm-check.args"
cat > "$root/usr/local/bin/vm-check" <<'SCRIPT'
#!/bin/bash
# As a user logs in: su -l goes through PAM, so pam_systemd gives the login a session
# scope, starts the user's manager (user@UID.service) and sets XDG_RUNTIME_DIR.
su -l tester -c "cd src && PIP_CONFIG_FILE=/dev/null PYTHONUNBUFFERED=1 \
    ../venv/bin/python -m pytest -p no:cacheprovider -rs $(cat /etc/vm-check.args)" 2>&1 \
    | tee /var/log/vm-check.log
echo "${PIPESTATUS[0]}" > /var/log/vm-check.rc  # pytest's
systemctl poweroff
SCRIPT
chmod 755 "$root/usr/local/bin/vm-check"
cat > "$root/etc/systemd/system/vm-check.service" <<'UNIT'
[Unit]
Description=the sandbox's tests, as a logged-in ordinary user
After=multi-user.target systemd-logind.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/vm-check
StandardOutput=journal+console
UNIT
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vm-check.service "$root/etc/systemd/system/multi-user.target.wants/"
rm -f "$root/var/log/vm-check.rc" "$root/var/log/vm-check.log"
echo sandbox-runner-vm > "$root/etc/hostname"  # and what an installer writes beside it
printf '127.0.0.1\tlocalhost\n127.0.1.1\tsandbox-runner-vm\n::1\tlocalhost ip6-localhost\n' \
    > "$root/etc/hosts"
echo "nameserver 10.0.2.3" > "$root/etc/resolv.conf"  # qemu's user network

echo "systemd-check: making the disk and booting (console: $vm/console.log)"
rm -f "$vm/disk.img"
mkfs.ext4 -q -F -d "$root" "$vm/disk.img" 8G
accel=(-accel tcg)
# KVM where the CPU shows it (a /dev/kvm without vmx/svm, as in a nested VM, can hang)
[ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=(-accel kvm -cpu host)
timeout "${VM_TIMEOUT:-3600}" qemu-system-x86_64 "${accel[@]}" -m 4096 -smp "$(nproc)" \
    -nographic -no-reboot -kernel "$root/vmlinuz" -initrd "$root/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1" \
    -drive "file=$vm/disk.img,format=raw,if=virtio" -nic user,model=virtio-net-pci \
    > "$vm/console.log" 2>&1 || echo "systemd-check: qemu ended with $?" >&2
debugfs -R "cat /var/log/vm-check.log" "$vm/disk.img" 2>/dev/null > "$vm/check.log" || true
cat "$vm/check.log"
rc=$(debugfs -R "cat /var/log/vm-check.rc" "$vm/disk.img" 2>/dev/null || true)
[ -n "$rc" ] || { echo "systemd-check: the tests did not run (see $vm/console.log)" >&2; exit 1; }
exit "$rc"
