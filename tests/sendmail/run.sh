#!/bin/sh
# Usage (as root): run.sh DIR COMMAND [ARGS...]
# Runs COMMAND in a private mount namespace in which /etc/hosts is DIR/hosts,
# /etc/resolv.conf is DIR/resolv.conf and /dev/log is DIR/log.sock, a syslog
# receiver the caller listens on. Sendmail needs a fully qualified name for its
# host without DNS (else it stalls for a minute), and logs only through syslog.
# /dev in there is a fresh tmpfs with the few device nodes Sendmail uses, so
# nothing is created in the real /dev. Nothing outside the namespace changes.
set -eu
exec unshare -m --propagation private sh -eu -c '
dir=$1
shift
mount --bind "$dir/hosts" /etc/hosts
# (Without an /etc/resolv.conf the resolver asks 127.0.0.1 anyway.)
if [ -e /etc/resolv.conf ]; then
  mount --bind "$dir/resolv.conf" /etc/resolv.conf
fi
mkdir -p "$dir/olddev"
mount --rbind /dev "$dir/olddev"
mount -t tmpfs -o mode=755 bsmdev /dev
for n in null zero full random urandom tty; do
  touch "/dev/$n"
  mount --bind "$dir/olddev/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
touch /dev/log
mount --bind "$dir/log.sock" /dev/log
exec "$@"
' run.sh "$@"
