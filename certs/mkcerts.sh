#!/bin/sh
# Creates a local certificate authority and every certificate qumail needs:
#   ca.pem / ca.key                 the local CA (trust anchor)
#   localhost.pem / localhost.key   the proxy's server certificate
#                                   (DNS:localhost, IP:127.0.0.1, IP:::1)
#   <kme-id>.pem / .key             a KME certificate per KME, CN=<kme-id>
#                                   (server and client use: KME-to-KME link)
#   <sae-id>.pem / .key             an SAE client certificate, CN=<sae-id>
#
# usage: certs/mkcerts.sh [-o OUTDIR] [-k KME_ID]... [-s SAE_ID]... [-d DAYS]
# Defaults: OUTDIR=certs/out, KMEs "kme-a" "kme-b", SAEs "sae-a" "sae-b".
# Existing files are kept (re-running adds what is missing), so a CA stays
# stable across runs. Keys are EC P-256, written with mode 0600.
set -eu

out=$(dirname "$0")/out
kmes=""
saes=""
days=825

while getopts "o:k:s:d:h" opt; do
    case $opt in
    o) out=$OPTARG ;;
    k) kmes="$kmes $OPTARG" ;;
    s) saes="$saes $OPTARG" ;;
    d) days=$OPTARG ;;
    h) sed -n '2,13p' "$0"; exit 0 ;;
    *) exit 2 ;;
    esac
done
[ -n "$kmes" ] || kmes="kme-a kme-b"
[ -n "$saes" ] || saes="sae-a sae-b"

umask 077
mkdir -p "$out"
cd "$out"

if [ ! -f ca.pem ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout ca.key -out ca.pem -days "$days" -subj "/O=QuMail Gateway/CN=QuMail local CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# issue NAME CN EXTFILE-CONTENT
issue() {
    name=$1 cn=$2 ext=$3
    [ -f "$name.pem" ] && return 0
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "/O=QuMail Gateway/CN=$cn" 2>/dev/null
    printf '%s\n' "$ext" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$name.pem" -days "$days" -sha256 -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

server_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

issue localhost localhost "$server_ext"
for k in $kmes; do
    # KME certificates also authenticate a KME to its peer KME (the link),
    # hence clientAuth as well as serverAuth.
    issue "$k" "$k" "$server_ext"
done
for s in $saes; do
    issue "$s" "$s" "$client_ext"
done
chmod 0644 ./*.pem
echo "certificates in $(pwd)"
