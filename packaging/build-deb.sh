#!/usr/bin/env bash
# Builds the Debian package of one runtime from its release binary:
#   cargo build --release -p handoff-tokio -p handoff-smol
#   packaging/build-deb.sh tokio|smol      -> target/deb/handoff-<runtime>_<version>_<arch>.deb
# Only dpkg-deb is needed (no cargo-deb). The two packages conflict: both ship
# the same units and /etc/handoff/handoff.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=${1:-}
case "$runtime" in
  tokio) other=smol ;;
  smol) other=tokio ;;
  *) echo "usage: $0 tokio|smol" >&2; exit 2 ;;
esac
package="handoff-$runtime"
target=${CARGO_TARGET_DIR:-target}
binary="$target/release/$package"
[ -x "$binary" ] || { echo "$binary is missing: cargo build --release -p $package" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "runtime-$runtime/Cargo.toml" | head -n 1)
[ -n "$version" ] || { echo "no version in runtime-$runtime/Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

umask 022
root="$target/deb/$package"
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/tmpfiles.d" \
  "$root/etc/handoff" "$root/usr/share/doc/$package"
install -m 0755 "$binary" "$root/usr/bin/$package"
# The release profile keeps line tables for profiling; the package does not need them.
if command -v strip >/dev/null; then strip --strip-debug "$root/usr/bin/$package"; fi
install -m 0644 packaging/handoff.socket "$root/lib/systemd/system/handoff.socket"
sed -e "s|@BINARY@|$package|g" -e "s|@PACKAGE@|$package|g" packaging/handoff.service.in \
  > "$root/lib/systemd/system/handoff.service"
chmod 0644 "$root/lib/systemd/system/handoff.service"
install -m 0644 packaging/handoff.tmpfiles "$root/usr/lib/tmpfiles.d/handoff.conf"
install -m 0644 packaging/handoff.toml "$root/etc/handoff/handoff.toml"
install -m 0644 README.md "$root/usr/share/doc/$package/README.md"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/handoff/handoff.toml > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: handoff developers <handoff@localhost>
Section: net
Priority: optional
Installed-Size: $size
Depends: adduser, libc6
Conflicts: handoff-$other
Replaces: handoff-$other
Description: streaming daemon for Apache's mod_socket_handoff ($runtime runtime)
 Takes the client sockets mod_socket_handoff hands over a Unix socket and
 streams LLM tokens to them as Server-Sent Events from an OpenAI-compatible
 API. Runs under systemd with socket activation (handoff.socket), Type=notify
 and a watchdog, as the dedicated system user handoff.
CONTROL

out="$target/deb/${package}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
