#!/bin/bash
# Pebble (Let's Encrypt's test CA) for the local demo and the end-to-end tests.
#  1. Makes a TLS certificate for Pebble's own listener (Debian ships none), signed by a
#     throw-away CA whose certificate is published as /pebble-ca/ca.pem for clients
#     (certbot: REQUESTS_CA_BUNDLE=/pebble-ca/ca.pem). Reused while still valid.
#  2. Starts pebble-challtestsrv as a DNS server only (127.0.0.1:8053) that answers
#     EVERY name with the IPv4 address of $DNS_TARGET (the nginx container), so any
#     made-up domain validates over real HTTP-01 against nginx.
#     A background loop follows that address if the container is recreated.
#  3. Execs pebble with that DNS server.
set -euo pipefail

CA_DIR=/pebble-ca                              # shared with clients: public CA cert only
TLS_DIR="${PEBBLE_TLS_DIR:-/var/lib/pebble/tls}" # private: CA key, listener key and cert
DNS_TARGET="${DNS_TARGET:-nginx}"
DNS_WAIT_TIMEOUT="${DNS_WAIT_TIMEOUT:-60}"
CERT_VALIDITY="${PEBBLE_CERT_VALIDITY:-7776000}" # seconds; 90 days
CONFIG=/tmp/pebble-config.json

log() { printf '[pebble-entrypoint] %s\n' "$*" >&2; }
die() { printf '[pebble-entrypoint] ERROR: %s\n' "$*" >&2; exit 1; }

[ -z "${PEBBLE_VA_ALWAYS_VALID:-}" ] || die "PEBBLE_VA_ALWAYS_VALID is set: this image only does real validation"
[[ "$CERT_VALIDITY" =~ ^[1-9][0-9]*$ ]] || die "PEBBLE_CERT_VALIDITY must be a number of seconds, got '$CERT_VALIDITY'"

# Names the listener certificate must cover.
names=(pebble localhost)
IFS=',' read -r -a extra <<<"${PEBBLE_HOSTNAMES:-}"
for n in "${extra[@]}"; do n="${n// /}"; [ -n "$n" ] && names+=("$n"); done
san=""; for n in "${names[@]}"; do san+="${san:+,}DNS:$n"; done

# Reuse the existing chain only if it is complete, matches, covers the names and lasts a day more.
tls_ok() {
  [ -s "$CA_DIR/ca.pem" ] && [ -s "$TLS_DIR/cert.pem" ] && [ -s "$TLS_DIR/key.pem" ] || return 1
  openssl verify -x509_strict -CAfile "$CA_DIR/ca.pem" "$TLS_DIR/cert.pem" >/dev/null 2>&1 || return 1
  openssl x509 -in "$TLS_DIR/cert.pem" -noout -checkend 86400 >/dev/null || return 1
  local have; have="$(openssl x509 -in "$TLS_DIR/cert.pem" -noout -ext subjectAltName 2>/dev/null)"
  for n in "${names[@]}"; do grep -q "DNS:$n\(,\|$\)" <<<"$have" || return 1; done
}

make_tls() {
  local tmp; tmp="$(mktemp -d "$TLS_DIR/.new.XXXXXX")"
  cat >"$tmp/openssl.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $san
CNF
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key" 2>/dev/null
  openssl req -x509 -new -config "$tmp/openssl.cnf" -extensions v3_ca -key "$tmp/ca.key" \
    -subj "/O=Pebble local demo/CN=Pebble listener CA $(openssl rand -hex 4)" \
    -days 3650 -set_serial "0x$(openssl rand -hex 16)" -out "$tmp/ca.pem"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/key.pem" 2>/dev/null
  openssl req -new -config "$tmp/openssl.cnf" -key "$tmp/key.pem" -subj "/CN=pebble" -out "$tmp/leaf.csr"
  openssl x509 -req -in "$tmp/leaf.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -extfile "$tmp/openssl.cnf" -extensions v3_leaf -days 825 \
    -set_serial "0x$(openssl rand -hex 16)" -out "$tmp/cert.pem" 2>/dev/null
  openssl verify -x509_strict -CAfile "$tmp/ca.pem" "$tmp/cert.pem" >/dev/null \
    || die "generated listener certificate does not verify"
  # Atomic renames; the public ca.pem last, so a client never sees a half-written file
  # nor a CA that does not match the listener yet.
  chmod 600 "$tmp/ca.key" "$tmp/key.pem"
  mv -f "$tmp/ca.key" "$TLS_DIR/ca.key"
  mv -f "$tmp/key.pem" "$TLS_DIR/key.pem"
  mv -f "$tmp/cert.pem" "$TLS_DIR/cert.pem"
  chmod 644 "$tmp/ca.pem"
  cp "$tmp/ca.pem" "$CA_DIR/.ca.pem.tmp.$$"
  mv -f "$CA_DIR/.ca.pem.tmp.$$" "$CA_DIR/ca.pem"
  rm -rf "$tmp"
  log "new listener certificate for ${names[*]}; CA published at $CA_DIR/ca.pem"
}

mkdir -p "$CA_DIR" "$TLS_DIR"
chmod 755 "$CA_DIR"; chmod 700 "$TLS_DIR"
if tls_ok; then log "reusing listener certificate and $CA_DIR/ca.pem"; else make_tls; fi

# Wait for the target container's name (Docker's DNS) to resolve. IPv4 only:
# `getent hosts` may return an IPv6 address first on dual-stack networks.
log "waiting up to ${DNS_WAIT_TIMEOUT}s for '$DNS_TARGET' to resolve"
ip=""
for ((i = 0; i < DNS_WAIT_TIMEOUT; i++)); do
  ip="$(getent ahostsv4 "$DNS_TARGET" | awk 'NR==1 {print $1}')" && [ -n "$ip" ] && break
  sleep 1
done
[ -n "$ip" ] || die "'$DNS_TARGET' did not resolve within ${DNS_WAIT_TIMEOUT}s (is that container on the same network? set DNS_TARGET)"
log "every domain name will resolve to $DNS_TARGET = $ip"

# DNS only: the HTTP-01/HTTPS/TLS-ALPN/DoH listeners are disabled (empty), management on loopback.
pebble-challtestsrv -defaultIPv4 "$ip" -defaultIPv6 "" -dns01 127.0.0.1:8053 \
  -http01 "" -https01 "" -tlsalpn01 "" -doh "" -management 127.0.0.1:8055 &
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/8055) 2>/dev/null && break; sleep 0.1; done
kill -0 $! 2>/dev/null || die "pebble-challtestsrv did not start"

# Follow the target: if the nginx container is recreated with a new address, tell
# challtestsrv through its management API (plain HTTP over bash's /dev/tcp; no curl here).
set_default_ipv4() {
  local body="{\"ip\":\"$1\"}" status
  exec 3<>/dev/tcp/127.0.0.1/8055 || return 1
  printf 'POST /set-default-ipv4 HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "${#body}" "$body" >&3
  read -r _ status _ <&3 || true
  exec 3>&-
  [ "$status" = 200 ]
}
if [ "${DNS_WATCH_INTERVAL:-2}" != 0 ]; then
  (
    while sleep "${DNS_WATCH_INTERVAL:-2}"; do
      new="$(getent ahostsv4 "$DNS_TARGET" | awk 'NR==1 {print $1}')" || continue
      if [ -n "$new" ] && [ "$new" != "$ip" ] && set_default_ipv4 "$new"; then
        log "$DNS_TARGET moved: every domain name now resolves to $new"; ip="$new"
      fi
    done
  ) &
fi

sed -e "s|@TLS_DIR@|$TLS_DIR|g" -e "s|@CERT_VALIDITY@|$CERT_VALIDITY|g" \
  /etc/pebble/pebble-config.json.tmpl >"$CONFIG"
log "starting pebble (certificate validity ${CERT_VALIDITY}s)"
exec pebble -config "$CONFIG" -dnsserver 127.0.0.1:8053 "$@"
