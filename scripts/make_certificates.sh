#!/usr/bin/env bash
# Certificates for a test deployment of the gateway (docs/security.md), made with openssl:
#   ca.pem / ca.key          a private CA (trust it in clients: --root-certs ca.pem)
#   server.pem / server.key  the gateway's certificate, for the names in SERVER_NAMES
#   client.pem / client.key  a client certificate for mutual TLS (--tls-client-ca ca.pem)
# Usage: scripts/make_certificates.sh OUT_DIR [SERVER_NAMES] [DAYS]
#   SERVER_NAMES: subjectAltName entries (default "DNS:localhost,IP:127.0.0.1")
# For production, use certificates from your organisation's CA or cert-manager.
set -euo pipefail
out=${1:?usage: $0 OUT_DIR [SERVER_NAMES] [DAYS]}
names=${2:-DNS:localhost,IP:127.0.0.1}
days=${3:-30}
mkdir -p "$out"
cd "$out"
umask 077  # private keys readable by their owner only
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"; }
key ca
openssl req -x509 -new -key ca.key -subj "/CN=LogitRec test CA $RANDOM" -days "$days" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$names" > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for name in server client; do
    key "$name"
    openssl req -new -key "$name.key" -subj "/CN=logitrec-$name" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm "$name.csr" "$name.ext"
done
rm -f ca.srl
chmod 644 ca.pem server.pem client.pem
echo "wrote $(pwd): ca.pem ca.key server.pem server.key client.pem client.key"
