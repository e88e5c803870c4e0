#!/bin/bash
# Authoritative BIND 9 for the DNS-01 demo and the end-to-end tests.
#  1. The TSIG key: kept in $CREDENTIALS_DIR/rfc2136.ini (certbot's credentials file for the
#     rfc2136 plugin, mode 600) and made on the first start.
#  2. Zone $DNS_ZONE: no address records but its name server's (its names reach nginx only through the
#     clients' --resolve, so only DNS-01 can validate them); the key may add and remove TXT records.
#  3. Zone $HTTP_ZONE: every name is an A record of $HTTP_TARGET (nginx), so Pebble, which
#     resolves through this server, validates the HTTP-01 sites against nginx.
set -euo pipefail

log() { printf '[bind-entrypoint] %s\n' "$*" >&2; }
die() { printf '[bind-entrypoint] ERROR: %s\n' "$*" >&2; exit 1; }

creds="$CREDENTIALS_DIR/rfc2136.ini"
mkdir -p "$CREDENTIALS_DIR"
self="$(hostname -i | awk '{print $1}')"
[ -n "$self" ] || die "no IPv4 address of my own"

secret=""
[ -s "$creds" ] && secret="$(sed -n 's/^dns_rfc2136_secret *= *//p' "$creds" | head -n1)"
if [ -z "$secret" ]; then
  secret="$(head -c 64 /dev/urandom | base64 -w0)"
  log "made a new TSIG key $TSIG_KEY_NAME"
fi
umask 077
cat >"$creds.tmp" <<INI
# certbot's rfc2136 plugin: this demo's BIND and its TSIG key (made by the bind container)
dns_rfc2136_server = $self
dns_rfc2136_port = 53
dns_rfc2136_name = $TSIG_KEY_NAME
dns_rfc2136_secret = $secret
dns_rfc2136_algorithm = HMAC-SHA512
INI
chmod 600 "$creds.tmp"
mv -f "$creds.tmp" "$creds"
umask 022

ip=""
for _ in $(seq 1 60); do
  ip="$(getent ahostsv4 "$HTTP_TARGET" | awk 'NR==1 {print $1}')" && [ -n "$ip" ] && break
  sleep 1
done
[ -n "$ip" ] || die "'$HTTP_TARGET' did not resolve (is it on the same network?)"
log "zone $HTTP_ZONE: every name -> $HTTP_TARGET = $ip; zone $DNS_ZONE: TXT updates with key $TSIG_KEY_NAME"

cat >/etc/bind/named.conf <<CONF
key "$TSIG_KEY_NAME" { algorithm hmac-sha512; secret "$secret"; };
options {
    directory "/var/cache/bind";
    listen-on { any; };
    listen-on-v6 { none; };
    recursion no;
    allow-query { any; };
    dnssec-validation no;
};
zone "$DNS_ZONE" { type master; file "/var/lib/bind/db.$DNS_ZONE"; update-policy { grant $TSIG_KEY_NAME zonesub TXT; }; };
zone "$HTTP_ZONE" { type master; file "/var/lib/bind/db.$HTTP_ZONE"; };
CONF
chmod 640 /etc/bind/named.conf
chown root:bind /etc/bind/named.conf

soa="@ IN SOA ns.$DNS_ZONE. admin.$DNS_ZONE. ( 1 60 60 600 5 )"
printf '$TTL 5\n%s\n@ IN NS ns.%s.\nns IN A %s\n' "$soa" "$DNS_ZONE" "$self" >"/var/lib/bind/db.$DNS_ZONE"
printf '$TTL 5\n%s\n@ IN NS ns.%s.\n@ IN A %s\n* IN A %s\n' "$soa" "$DNS_ZONE" "$ip" "$ip" >"/var/lib/bind/db.$HTTP_ZONE"
rm -f /var/lib/bind/*.jnl
chown bind:bind /var/lib/bind/db.*

exec named -g -u bind -c /etc/bind/named.conf
