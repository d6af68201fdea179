#!/usr/bin/env bash
# Builds the Debian package of mountgate from this source tree.
#
#   packaging/build-deb.sh [--out DIR] [--no-build] [--version VERSION]
#
# Before: `npm ci` in the tree (the build needs the dev dependencies).
# The script then
#   1. runs `npm run build` (skip with --no-build to package the dist/ as is),
#   2. stages the package in a temporary directory: dist/src, schemas and
#      package.json under /usr/lib/mountgate, with the production dependencies
#      installed there fresh from package-lock.json (`npm ci --omit=dev`, native
#      addons built for this machine, patches/ applied with patch-package),
#      bin/mountgate as /usr/bin/mountgate (a symlink to its copy in the
#      library), a wrapper for mountgated, the systemd unit, the D-Bus policy
#      and activation files, and /etc/mountgate/policy.json (a conffile: the built-in default),
#   3. writes DIR/mountgate_VERSION_ARCH.deb (DIR defaults to the current
#      directory) with `dpkg-deb --build --root-owner-group`, and prints its path.
# It never touches the tree's own node_modules and leaves no temporary files.
#
# Needs: node and npm (the same major version as the target's nodejs, since
# native addons are built against it), dpkg-deb, a C/C++ toolchain for
# node-gyp, and the npm registry or a warm npm cache.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$PWD
build=1
version=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --no-build) build=0; shift ;;
    --version) version=$2; shift 2 ;;
    --version=*) version=${1#--version=}; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

die() { echo "build-deb.sh: $*" >&2; exit 1; }
for tool in node npm dpkg-deb dpkg; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
[ -d "$out" ] || die "output directory $out does not exist"
out=$(cd "$out" && pwd)

cd "$root"
[ -n "$version" ] || version=$(node -p 'require("./package.json").version')
arch=$(dpkg --print-architecture)
node_major=$(node -p 'process.versions.node.split(".")[0]')

if [ "$build" = 1 ]; then
  [ -d node_modules ] || die "run npm ci in $root first (the build needs the dev dependencies)"
  npm run -s build
fi
for entry in dist/src/cli/main.js dist/src/broker/main.js; do
  [ -f "$entry" ] || die "$entry is missing: build the tree first (npm run build)"
done

umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/mountgate-deb.XXXXXX")
cleanup() { rm -rf "$stage"; }
trap cleanup EXIT
pkgroot=$stage/root
lib=$pkgroot/usr/lib/mountgate
mkdir -p "$lib" "$pkgroot/DEBIAN"

# --- The program --------------------------------------------------------------
# Compiled JavaScript only: declaration files and source maps point at sources
# that are not shipped.
mkdir -p "$lib/dist"
(cd dist && find src -type f -name '*.js' -print0 | tar --null -cf - -T -) | tar -xf - -C "$lib/dist"
cp -r schemas "$lib/schemas"
cp package.json package-lock.json "$lib/"
[ -d patches ] && cp -r patches "$lib/patches"

# Production dependencies, exactly as locked. Lifecycle scripts are run in two
# explicit steps instead of by `npm ci`, so a script of the root package (a
# prepare that builds, say) cannot run in the stage: `npm rebuild` runs the
# dependencies' install scripts (native addons), then patch-package applies
# patches/ and fails the build if a patch does not apply.
(
  cd "$lib"
  npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
  npm rebuild --loglevel=error
  if [ -d patches ]; then
    node node_modules/patch-package/index.js --error-on-fail
  fi
)
rm -f "$lib/package-lock.json"

# better-sqlite3 is built from source (no prebuilt binary is fetched): the
# addon must be there; its sources and intermediate objects are not needed.
bsq=$lib/node_modules/better-sqlite3
[ -f "$bsq/build/Release/better_sqlite3.node" ] || die "better-sqlite3's addon was not built (needs g++ and make)"
rm -rf "$bsq/build/Release/obj" "$bsq/build/Release/obj.target" "$bsq/build/Release/.deps" "$bsq/build/Release/sqlite3.a" "$bsq/build/Release/test_extension.node" "$bsq/build/deps" "$bsq/deps" "$bsq/src"

# Prebuilt binaries for other platforms (koffi ships all of them, node-pty the
# darwin/win32 ones): dead weight in a package for one architecture.
case "$arch" in
  amd64) koffi_dir=linux_x64 ;; arm64) koffi_dir=linux_arm64 ;; armhf) koffi_dir=linux_armhf ;;
  i386) koffi_dir=linux_ia32 ;; riscv64) koffi_dir=linux_riscv64d ;; loong64) koffi_dir=linux_loong64 ;;
  *) koffi_dir= ;;
esac
if [ -n "$koffi_dir" ] && [ -d "$lib/node_modules/koffi/build/koffi/$koffi_dir" ]; then
  find "$lib/node_modules/koffi/build/koffi" -mindepth 1 -maxdepth 1 -type d ! -name "$koffi_dir" -exec rm -rf {} +
fi
if [ -d "$lib/node_modules/node-pty/prebuilds" ]; then
  find "$lib/node_modules/node-pty/prebuilds" -mindepth 1 -maxdepth 1 -type d ! -name "linux-*" -exec rm -rf {} +
fi

# No write bit for group/other anywhere, whatever the tarballs said.
chmod -R u+rwX,go+rX,go-w "$lib"

# --- Commands -----------------------------------------------------------------
# /usr/bin/mountgate is bin/mountgate itself (a symlink to its copy in the
# library), so an installed user runs the same entry as the tree: its node
# flags on the #! line and its short path for `image build`. The only change
# is the interpreter: the package's /usr/bin/node rather than whichever node
# comes first on the user's PATH (the native addons are built for this one).
mkdir -p "$pkgroot/usr/bin" "$lib/bin"
sed '1s|^#!/usr/bin/env -S node |#!/usr/bin/env -S /usr/bin/node |' bin/mountgate > "$lib/bin/mountgate"
head -n 1 "$lib/bin/mountgate" | grep -q '^#!/usr/bin/env -S /usr/bin/node ' || die "bin/mountgate does not start with #!/usr/bin/env -S node: update this script"
chmod 0755 "$lib/bin/mountgate"
ln -s ../lib/mountgate/bin/mountgate "$pkgroot/usr/bin/mountgate"
# The executor's environment and Node flags (what it keeps resident, and its
# ceiling), from src/broker/node-flags.ts, the one place they are written.
executor_env=$(node --input-type=module -e '
  const m = await import(process.argv[1]);
  process.stdout.write(Object.entries(m.brokerEnv).map(([k, v]) => `export ${k}=${v}`).join("\n"));
' "$root/dist/src/broker/node-flags.js")
executor_flags=$(node --input-type=module -e '
  const m = await import(process.argv[1]);
  process.stdout.write(m.nodeFlags.executor.join(" "));
' "$root/dist/src/broker/node-flags.js")
cat > "$pkgroot/usr/bin/mountgated" <<EOF
#!/bin/sh
$executor_env
exec /usr/bin/node $executor_flags /usr/lib/mountgate/dist/src/broker/main.js "\$@"
EOF
chmod 0755 "$pkgroot/usr/bin/mountgated"

# --- systemd and D-Bus --------------------------------------------------------
for unit in mountgated.service mountgated.socket mountgate-front.service; do
  install -D -m 0644 "systemd/$unit" "$pkgroot/usr/lib/systemd/system/$unit"
done
install -D -m 0644 systemd/org.mountgate.Broker1.conf "$pkgroot/usr/share/dbus-1/system.d/org.mountgate.Broker1.conf"
install -D -m 0644 systemd/org.mountgate.Broker1.service "$pkgroot/usr/share/dbus-1/system-services/org.mountgate.Broker1.service"
if [ -f schemas/org.mountgate.Broker1.xml ]; then
  install -D -m 0644 schemas/org.mountgate.Broker1.xml "$pkgroot/usr/share/dbus-1/interfaces/org.mountgate.Broker1.xml"
fi

# --- Configuration (conffile) -------------------------------------------------
install -d -m 0755 "$pkgroot/etc/mountgate"
# The built-in default (src/policy/default.ts, what the broker enforces when
# the file is missing), written out with the image quotas it implies, so the
# conffile shows an administrator exactly what is in force and cannot drift.
node --input-type=module -e '
  const m = await import(process.argv[1]);
  process.stdout.write(JSON.stringify({ ...m.defaultPolicy, images: { ...m.defaultImageLimits } }, null, 2) + "\n");
' "$root/dist/src/policy/default.js" > "$pkgroot/etc/mountgate/policy.json"
chmod 0644 "$pkgroot/etc/mountgate/policy.json"

# --- Documentation ------------------------------------------------------------
doc=$pkgroot/usr/share/doc/mountgate
install -d -m 0755 "$doc"
[ -f README.md ] && install -m 0644 README.md "$doc/README.md"
install -m 0644 packaging/README.md "$doc/README.Debian.md"
cat > "$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mountgate
Comment: The package also contains the npm dependencies listed in
 /usr/lib/mountgate/node_modules/.package-lock.json, each under the license in
 its own directory.

Files: *
Copyright: mountgate authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
chmod 0644 "$doc/copyright"

# --- Control files ------------------------------------------------------------
installed_size=$(du -sk --apparent-size "$pkgroot" | cut -f1)
cat > "$pkgroot/DEBIAN/control" <<EOF
Package: mountgate
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-mountgate developers <mountgate@localhost>}
Installed-Size: $installed_size
Depends: nodejs (>= $node_major~), nodejs (<< $((node_major + 1))~), default-dbus-system-bus | dbus-system-bus, passwd, util-linux
Recommends: systemd, uidmap
Suggests: erofs-utils
Section: admin
Priority: optional
Homepage: https://mountgate.dev
Description: idmapped and composefs mounts for unprivileged users
 mountgate lets an unprivileged user mount container images (composefs:
 EROFS metadata plus a content-addressed object store) and idmapped binds of
 their own directories inside their own user namespace, through a small
 privileged broker on the D-Bus system bus (mountgated, started on demand).
 .
 The broker's policy is /etc/mountgate/policy.json.
EOF
echo /etc/mountgate/policy.json > "$pkgroot/DEBIAN/conffiles"

cat > "$pkgroot/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # The broker's front runs as this system user (the bus policy lets only it
  # own org.mountgate.Broker1, mountgated.socket lets only its group in, and
  # mountgate-front.service's StateDirectory= gives it /var/lib/mountgate).
  if ! getent passwd mountgate >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group mountgate
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade takes effect at once if the broker was running (restarting
    # the executor restarts the front: PartOf=).
    systemctl try-restart mountgated.service mountgate-front.service || true
  fi
  # Make the system bus read the new policy and activation files.
  if [ -d /run/systemd/system ] && systemctl -q is-active dbus.service 2>/dev/null; then
    systemctl reload dbus.service || true
  elif [ -S /run/dbus/system_bus_socket ] && command -v dbus-send >/dev/null; then
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig || true
  fi
fi
exit 0
EOF
cat > "$pkgroot/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop mountgate-front.service mountgated.service mountgated.socket || true
fi
exit 0
EOF
cat > "$pkgroot/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
case "$1" in
  remove)
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    ;;
  purge)
    # The broker's store and state. Mounts made from it hold their own
    # references; --one-file-system keeps rm out of anything mounted below.
    rm -rf --one-file-system /var/lib/mountgate /run/mountgate
    ;;
esac
exit 0
EOF
chmod 0755 "$pkgroot/DEBIAN/postinst" "$pkgroot/DEBIAN/prerm" "$pkgroot/DEBIAN/postrm"

deb=$out/mountgate_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkgroot" "$deb" >/dev/null
echo "$deb"
