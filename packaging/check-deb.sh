#!/usr/bin/env bash
# Checks a package made by build-deb.sh: its metadata, the files it installs and
# their modes, the conffile and maintainer scripts, the units (with
# systemd-analyze verify when it exists), and that the binary runs.
#   packaging/check-deb.sh target/deb/handoff-tokio_0.1.0_amd64.deb tokio
set -euo pipefail

deb=${1:?usage: $0 PACKAGE.deb tokio|smol}
runtime=${2:?usage: $0 PACKAGE.deb tokio|smol}
case "$runtime" in
  tokio) other=smol ;;
  smol) other=tokio ;;
  *) echo "usage: $0 PACKAGE.deb tokio|smol" >&2; exit 2 ;;
esac
package="handoff-$runtime"
fail() { echo "check-deb: $deb: $*" >&2; exit 1; }

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = "$package" ] || fail "Package is $(field Package), not $package"
[ "$(field Conflicts)" = "handoff-$other" ] || fail "does not conflict with handoff-$other"
field Depends | grep -qw adduser || fail "does not depend on adduser (postinst uses it)"

# dpkg-deb -c: mode, owner/group, size, date, time, path.
listing=$(dpkg-deb -c "$deb")
expect() { # mode path
  echo "$listing" | awk -v mode="$1" -v path="./$2" '$1 == mode && $2 == "root/root" && $6 == path { found = 1 } END { exit !found }' \
    || fail "no $1 root/root ./$2 in:"$'\n'"$listing"
}
expect -rwxr-xr-x "usr/bin/$package"
expect -rw-r--r-- lib/systemd/system/handoff.service
expect -rw-r--r-- lib/systemd/system/handoff.socket
expect -rw-r--r-- usr/lib/tmpfiles.d/handoff.conf
expect -rw-r--r-- etc/handoff/handoff.toml

[ "$(dpkg-deb -I "$deb" conffiles)" = /etc/handoff/handoff.toml ] || fail "handoff.toml is not the one conffile"
dpkg-deb -I "$deb" postinst | grep -q 'adduser --system' || fail "postinst does not create the system user"
dpkg-deb -I "$deb" postinst | grep -q 'chmod 0640 /etc/handoff/handoff.toml' || fail "postinst leaves the config (and its key) world-readable"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
units="$tmp/lib/systemd/system"
for line in "Type=notify" "ExecStart=/usr/bin/$package --config /etc/handoff/handoff.toml" "User=handoff" \
  "NoNewPrivileges=yes" "ProtectSystem=strict" "PrivateTmp=yes" "ProtectHome=yes" "Restart=on-failure" \
  "ExecReload=/bin/kill -HUP \$MAINPID"; do
  grep -qx "$line" "$units/handoff.service" || fail "handoff.service lacks $line"
done
for key in WatchdogSec LimitNOFILE TimeoutStopSec; do
  grep -q "^$key=" "$units/handoff.service" || fail "handoff.service sets no $key="
done
for line in "ListenSequentialPacket=/run/handoff/handoff.sock" "SocketGroup=www-data" "SocketMode=0660"; do
  grep -qx "$line" "$units/handoff.socket" || fail "handoff.socket lacks $line"
done
! grep -q @ "$units/handoff.service" || fail "handoff.service has a placeholder left"

"$tmp/usr/bin/$package" --version | grep -q "$package" || fail "$package --version does not name itself"

if command -v systemd-analyze >/dev/null; then
  # verify needs ExecStart's binary on this host: point it at the extracted one.
  sed -i "s|^ExecStart=/usr/bin/|ExecStart=$tmp/usr/bin/|" "$units/handoff.service"
  # Any complaint (an unknown key is only a warning) fails the check.
  complaints=$(cd "$units" && SYSTEMD_UNIT_PATH="$units:" systemd-analyze verify handoff.socket handoff.service 2>&1) \
    || fail "systemd-analyze verify failed: $complaints"
  [ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
else
  echo "check-deb: systemd-analyze not found; units not verified"
fi
echo "check-deb: $deb ok"
