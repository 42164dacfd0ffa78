#!/bin/sh
# Builds the Debian package (CPack DEB, from the same install rules as
# `cmake --install`) in build-deb/: prefix /usr, Release, no tests.
#   sh deploy/build-deb.sh            -> build-deb/qumail_<version>_<arch>.deb
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${QUMAIL_DEB_BUILD:-$top/build-deb}
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DQUMAIL_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target qumail
(cd "$build" && cpack -G DEB >/dev/null)
ls "$build"/qumail_*.deb
