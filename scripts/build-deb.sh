#!/usr/bin/env bash
# Builds dist/usersd_<version>_amd64.deb: a release build of usersd with the Swift
# runtime linked in statically (the package needs no Swift toolchain), stripped;
# the systemd units, the nginx site, /etc/default/usersd, the docs and a man page
# generated from `usersd --help`. Depends: is computed from the binary with
# dpkg-shlibdeps (dpkg-dev) when available.
#
#   scripts/build-deb.sh            # -> dist/usersd_0.1.0_amd64.deb (path printed last)
#   DEB_MAINTAINER="Name <mail>" scripts/build-deb.sh
#   DEB_COMPRESSION="-Zxz -z9" scripts/build-deb.sh   # smallest package, slowest
#
# The build uses its own scratch directory (.build-deb/) so it never disturbs the
# debug/release builds in .build/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
export PATH="$PATH:/opt/swift/usr/bin"
scratch="${DEB_SCRATCH_PATH:-$here/.build-deb}"
dist="$here/dist"

for tool in swift dpkg-deb strip gzip; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool is needed" >&2; exit 1; }
done
[[ "$(dpkg --print-architecture)" == amd64 ]] || { echo "build-deb: builds amd64 packages on amd64 only" >&2; exit 1; }

echo "build-deb: swift build -c release --static-swift-stdlib" >&2
swift build -c release --static-swift-stdlib --scratch-path "$scratch" >&2
binary="$scratch/release/usersd"

# Nothing may come from the Swift toolchain at run time.
if ldd "$binary" | grep -E '/opt/swift|/usr/share/swift|not found' >&2; then
  echo "build-deb: $binary still needs libraries from the Swift toolchain (above)" >&2
  exit 1
fi

version="$("$binary" --version | awk '$1 == "usersd" {print $2}')"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || { echo "build-deb: bad version '$version' from usersd --version" >&2; exit 1; }
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
maintainer="${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || echo 'usersd maintainers <root@localhost>')}"

work="$(mktemp -d "${TMPDIR:-/tmp}/usersd-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/usersd_${version}_amd64"
umask 022

install -D -m 0755 "$binary" "$root/usr/bin/usersd"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/usersd"
"$root/usr/bin/usersd" --version >/dev/null  # the stripped binary still runs

install -D -m 0644 systemd/usersd.socket "$root/lib/systemd/system/usersd.socket"
install -D -m 0644 systemd/usersd.service "$root/lib/systemd/system/usersd.service"
install -D -m 0644 nginx/usersd.conf "$root/etc/nginx/sites-available/usersd"
install -D -m 0644 packaging/usersd.default "$root/etc/default/usersd"

doc="$root/usr/share/doc/usersd"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 packaging/copyright "$doc/copyright"
[[ -f docs/deploy.md ]] && install -D -m 0644 docs/deploy.md "$doc/deploy.md"

mkdir -p "$root/usr/share/man/man8"
bash packaging/manpage.sh "$root/usr/bin/usersd" | gzip -9n >"$root/usr/share/man/man8/usersd.8.gz"

# Depends: from the libraries the binary links (dpkg-shlibdeps needs a
# debian/control to run in; give it a minimal one).
depends=""
if command -v dpkg-shlibdeps >/dev/null; then
  mkdir -p "$work/src/debian"
  printf 'Source: usersd\n\nPackage: usersd\nArchitecture: amd64\n' >"$work/src/debian/control"
  depends="$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/bin/usersd" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
fi
if [[ -z "$depends" ]]; then
  echo "build-deb: dpkg-shlibdeps unavailable (install dpkg-dev); using the known list" >&2
  depends="libc6 (>= 2.34), libfcgi0ldbl (>= 2.4.2), libgcc-s1 (>= 3.0), libpq5 (>= 15), libsqlite3-0 (>= 3.35.0), libstdc++6 (>= 12)"
fi
for needed in libc6 libfcgi0ldbl libsqlite3-0; do
  [[ "$depends" == *"$needed"* ]] || { echo "build-deb: Depends lacks $needed: $depends" >&2; exit 1; }
done

mkdir -p "$root/DEBIAN"
installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
control="$(<packaging/control.in)"
control="${control//@VERSION@/$version}"
control="${control//@MAINTAINER@/$maintainer}"
control="${control//@INSTALLED_SIZE@/$installed_size}"
control="${control//@DEPENDS@/$depends}"
printf '%s\n' "$control" >"$root/DEBIAN/control"
install -m 0644 packaging/conffiles "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$dist"
deb="$dist/usersd_${version}_amd64.deb"
# xz -1: a third smaller than gzip and 4x faster than dpkg-deb's default xz -6 on
# a 58 MB binary; DEB_COMPRESSION="-Zxz -z9" for a release upload.
# shellcheck disable=SC2086
dpkg-deb --build --root-owner-group ${DEB_COMPRESSION:--Zxz -z1} "$root" "$deb" >&2
echo "$deb"
