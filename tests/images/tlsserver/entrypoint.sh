#!/bin/sh
# Wait for the certificate (a service started before its first certificate is issued), then run
# stunnel in the foreground as PID 1, so a signal sent to the container reaches it.
set -eu
live="/etc/letsencrypt/live/${CERT_NAME:?set CERT_NAME to the certificate name}"
until [ -s "$live/fullchain.pem" ] && [ -s "$live/privkey.pem" ]; do sleep 0.2; done
cat >/tmp/stunnel.conf <<CONF
foreground = yes
pid =
debug = notice
[tls]
accept = 4443
cert = $live/fullchain.pem
key = $live/privkey.pem
exec = /bin/echo
execArgs = echo hello from stunnel
CONF
exec stunnel4 /tmp/stunnel.conf
