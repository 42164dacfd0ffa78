#!/bin/sh
# The whole test suite: installs dependencies, builds with AddressSanitizer
# and UndefinedBehaviorSanitizer, runs unit, integration and end-to-end tests
# (real Postfix and Dovecot on loopback). Exit status is the suite's.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ "$(id -u)" -eq 0 ]; then
    sh deploy/install-deps.sh
else
    sudo sh deploy/install-deps.sh
fi

build=${QUMAIL_TEST_BUILD:-build-test}
cmake -S . -B "$build" -DQUMAIL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$(nproc)"

# Sanitizer reports fail the test that triggers them.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$top/tests/lsan.supp:print_suppressions=0}
# The package test installs the .deb into a fresh debootstrapped Debian 12
# root (built once, about 5 minutes, kept in /var/tmp): on by default so a
# clean CI machine checks the package too; QUMAIL_TEST_DEBOOTSTRAP=0 skips.
export QUMAIL_TEST_DEBOOTSTRAP=${QUMAIL_TEST_DEBOOTSTRAP:-1}
ctest --test-dir "$build" --output-on-failure --timeout 900 "$@"
