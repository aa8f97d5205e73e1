#!/bin/sh
# Starts the bare server: NAT, charon, then its configuration, the way an operator's init
# script would. Prints "bare: config loaded" when clients can connect.
set -eu
nft -f /etc/bare/nat.nft
rm -f /var/run/charon.pid /var/run/charon.vici
/usr/lib/ipsec/charon &
charon=$!
trap 'kill -TERM "$charon"; wait "$charon"; exit 0' TERM INT
until swanctl --stats >/dev/null 2>&1; do sleep 0.02; done
swanctl --load-all --noprompt
echo "bare: config loaded"
wait "$charon"
