#!/bin/sh
# setup-hostsupport.sh PREFIX
#
# Builds the OpenFX HostSupport library (the C++ host layer that Natron's host
# is built on, from the sources the `openfx-sys` 0.1.0 crate ships) into
# PREFIX, for the plugin's HostSupport test harness
# (ofx-plugin/tests/hostsupport.rs). Nothing is installed into the system.
#
# Needs curl, sha256sum, tar, g++ and expat's headers (libexpat1-dev).
#
# Environment (optional):
#   OPENFX_SYS_CRATE  a local copy of openfx-sys-0.1.0.crate (skips the download;
#                     its checksum is still checked)
#
# Result:
#   PREFIX/include/      HostSupport's headers and the OpenFX headers they use
#   PREFIX/lib/libofxhost.a
# Link a host with: -IPREFIX/include PREFIX/lib/libofxhost.a -lexpat -ldl
set -eu

PREFIX=${1:?usage: setup-hostsupport.sh PREFIX}
URL=https://static.crates.io/crates/openfx-sys/openfx-sys-0.1.0.crate
SHA256=8c33f9e9c468d420ce2d683397834faaa9249566af5160c1e8169a48bb799679

mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
work=$PREFIX/build
rm -rf "$work" "$PREFIX/include" "$PREFIX/lib"
mkdir -p "$work" "$PREFIX/include" "$PREFIX/lib"

crate=$work/openfx-sys.crate
if [ -n "${OPENFX_SYS_CRATE:-}" ]; then
    cp "$OPENFX_SYS_CRATE" "$crate"
else
    echo "setup-hostsupport: downloading $URL" >&2
    curl -fsSL --retry 3 -o "$crate" "$URL"
fi
echo "$SHA256  $crate" | sha256sum -c --quiet - || {
    echo "setup-hostsupport: checksum mismatch for $crate" >&2
    exit 1
}
tar -xzf "$crate" -C "$work" openfx-sys-0.1.0/openfx/include openfx-sys-0.1.0/openfx/HostSupport/include \
    openfx-sys-0.1.0/openfx/HostSupport/src
ofx=$work/openfx-sys-0.1.0/openfx

# C++98: HostSupport's dynamic exception specifications (OFX_EXCEPTION_SPEC)
# are errors from C++17 on. The system's expat replaces the vendored 2.0.1.
echo "setup-hostsupport: compiling HostSupport" >&2
objs=
for src in "$ofx"/HostSupport/src/*.cpp; do
    obj=$work/$(basename "$src" .cpp).o
    g++ -std=c++98 -O1 -fPIC -w -I"$ofx/include" -I"$ofx/HostSupport/include" -c "$src" -o "$obj"
    objs="$objs $obj"
done
# shellcheck disable=SC2086
ar rcs "$PREFIX/lib/libofxhost.a" $objs
cp "$ofx"/include/*.h "$ofx"/HostSupport/include/*.h "$PREFIX/include/"
rm -rf "$work"
echo "setup-hostsupport: done; $PREFIX/lib/libofxhost.a" >&2
