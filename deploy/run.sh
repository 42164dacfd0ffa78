#!/bin/sh
# The main job on embedded defaults: installs dependencies, builds qumail,
# and runs the whole product on this machine (deploy/demo.py): a real
# Postfix + Dovecot on loopback, `qumail proxy` in front of them with the
# embedded ETSI GS QKD 014 KME simulator, one message sent through it,
# stored encrypted and decrypted as the receiver does. It then keeps
# running for a mail client until Ctrl-C. Pass --once to stop after the
# round trip.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ "$(id -u)" -eq 0 ]; then
    sh deploy/install-deps.sh
else
    sudo sh deploy/install-deps.sh
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target qumail

if [ "$(id -u)" -eq 0 ]; then
    exec python3 deploy/demo.py --build build "$@"
else
    exec sudo python3 deploy/demo.py --build build "$@"
fi
