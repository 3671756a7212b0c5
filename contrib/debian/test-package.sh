#!/usr/bin/env bash
# The Debian package on this machine, used as an admin would (root, Debian 12):
#  1. build the .deb with cargo-deb and install it with dpkg -i;
#  2. check what the install made: the service user and group (postfix in it), the
#     state and run dirs, a BATV key owned by the service user with mode 0600, the
#     conffile, man pages, completions, the unit (systemd-analyze verify);
#  3. turn on BATV in the installed config as the guide says, start the installed
#     binary as the installed user with the installed config, the way the unit does
#     (setpriv: that user, no new privileges, umask 0077; no systemd needed);
#  4. wire the system Postfix to it: Debian's own master.cf (smtpd, cleanup and
#     smtp chrooted) plus the packaged main.cf snippet pasted verbatim;
#  5. send mail with swaks: ours goes out BATV-signed; a forged bounce through an
#     inbound relay is judged (X-Backscatter verdict); a bounce to our tag is valid;
#     the milter's lines reach syslog with facility mail beside Postfix's, keyed by
#     Postfix's queue id;
#  6. purge the package and restore /etc/postfix, whatever happened.
#
#   contrib/debian/test-package.sh [--profile release|dev]
#
# --profile dev packages the debug build `cargo test` already made (what .ci/run
# does, to save a release build); the default builds the release package.
# It refuses to run where backscatter-milter is installed or Postfix is running.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

profile=release
if [ "${1:-}" = --profile ]; then profile=${2:?--profile needs a value}; fi

say() { echo "test-package: $*"; }
fail() {
    echo "test-package: FAIL: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs a package and starts Postfix)"
for c in dpkg-deb postfix swaks perl setpriv cargo-deb; do
    command -v "$c" >/dev/null || fail "missing $c"
done
if dpkg-query -W -f='${Status}' backscatter-milter 2>/dev/null | grep -q installed; then
    fail "backscatter-milter is installed here; not touching it"
fi
if postfix status >/dev/null 2>&1; then
    fail "the system Postfix is running; this test reconfigures and restarts it"
fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 25 7357 8895; do
    if port_busy "$p"; then fail "127.0.0.1:$p is in use"; fi
done

work=$(mktemp -d /tmp/bsm-package.XXXXXX)
chmod 755 "$work"
cp -a /etc/postfix "$work/etc-postfix"
had_user=$(getent passwd backscatter >/dev/null && echo yes || echo no)
pids=()
devlog=""
cleanup() {
    local rc=$?
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    postfix stop >/dev/null 2>&1
    if [ $rc != 0 ]; then
        say "milter stderr:"
        cat "$work/milter.stderr" 2>/dev/null
        say "syslog lines:"
        cat "$work/syslog" 2>/dev/null
    fi
    dpkg --purge backscatter-milter >/dev/null 2>&1
    if [ "$had_user" = no ]; then
        deluser --quiet --system backscatter >/dev/null 2>&1
        delgroup --quiet --system backscatter >/dev/null 2>&1
    fi
    rm -rf /etc/postfix && cp -a "$work/etc-postfix" /etc/postfix
    [ -n "$devlog" ] && rm -f /dev/log
    rm -rf /var/spool/postfix/backscatter-test
    rm -rf "$work"
    [ $rc = 0 ] && say "PASS" || say "FAIL (exit $rc)"
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. build, install
t0=$(date +%s)
if [ "$profile" = dev ]; then
    # cargo-deb warns that a dev-profile package is not for release; it is not.
    cargo deb --locked --profile dev --fast -o "$work/" 2>&1 | grep -v '^warning: dev profile\|^ *To enable debug symbols' || true
else
    cargo deb --locked --fast -o "$work/"
fi
deb=$(ls "$work"/backscatter-milter_*.deb) || fail "no .deb built"
say "built $(basename "$deb") ($profile, $(($(date +%s) - t0)) s, $(stat -c %s "$deb") bytes)"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || {
    cat "$work/dpkg.log"
    fail "dpkg -i"
}

# ---------------------------------------------------------------- 2. what it made
bin=/usr/sbin/backscatter-milter
conf=/etc/backscatter-milter/milter.toml
keys=/etc/backscatter-milter/batv.keys
[ -x "$bin" ] || fail "$bin missing"
getent passwd backscatter | grep -q ':/usr/sbin/nologin$' || fail "no system user backscatter"
id -nG postfix | grep -qw backscatter || fail "postfix is not in group backscatter"
[ "$(stat -c '%U:%G %a' /var/lib/backscatter-milter)" = "backscatter:backscatter 750" ] ||
    fail "/var/lib/backscatter-milter: $(stat -c '%U:%G %a' /var/lib/backscatter-milter)"
[ "$(stat -c '%U:%G %a' /run/backscatter-milter)" = "backscatter:backscatter 750" ] ||
    fail "/run/backscatter-milter: $(stat -c '%U:%G %a' /run/backscatter-milter)"
[ "$(stat -c '%U %a' "$keys")" = "backscatter 600" ] || fail "$keys: $(stat -c '%U %a' "$keys")"
grep -Eq '^1 [A-Za-z0-9+/]{22,}={0,2}$' "$keys" || fail "$keys holds no key line"
dpkg-query -W -f='${Conffiles}\n' backscatter-milter | grep -q " $conf " || fail "$conf is not a conffile"
grep -q '^target = "syslog"$' "$conf" || fail "the packaged config does not log to syslog"
zcat /usr/share/man/man8/backscatter-milter.8.gz | grep -q '^\.SS keygen' || fail "man page (8)"
zcat /usr/share/man/man5/milter.toml.5.gz | grep -q 'inbound_relays' || fail "man page (5)"
[ -s /usr/share/bash-completion/completions/backscatter-milter ] || fail "bash completion"
unit=/usr/lib/systemd/system/backscatter-milter.service
grep -q "^ExecStart=$bin --config $conf$" "$unit" || fail "unit ExecStart"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify --man=no "$unit" || fail "systemd-analyze verify $unit"
    say "unit verified; $(systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -1 | sed 's/^→ //')"
else
    say "SKIPPED systemd-analyze verify: no systemd-analyze"
fi
# A second install (an upgrade) keeps the key.
before=$(cat "$keys")
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || fail "reinstall"
[ "$(cat "$keys")" = "$before" ] || fail "reinstalling replaced the key"
say "install: user, group, dirs, key (backscatter 0600), conffile, man pages, unit: ok"

# ---------------------------------------------------------------- 3. configure, start
# As the guide says: our domain, and loopback is where inbound mail is relayed from
# in this test (as a content filter would), so bounces from it are judged.
sed -i -e 's/^sign_domains = \[\]$/sign_domains = ["example.org"]/' \
    -e 's/^inbound_relays = \[\]$/inbound_relays = ["127.0.0.1"]/' "$conf"
grep -q '^sign_domains = \["example.org"\]$' "$conf" || fail "could not set sign_domains"
grep -q '^inbound_relays = \["127.0.0.1"\]$' "$conf" || fail "could not set inbound_relays"
setpriv --reuid=backscatter --regid=backscatter --init-groups -- \
    "$bin" --config "$conf" --check-config || fail "--check-config as backscatter"

# Syslog: with no /dev/log here (a container), listen on it ourselves.
if [ ! -e /dev/log ]; then
    devlog=yes
    perl -MSocket -MIO::Socket::UNIX -e '
        $| = 1;
        my $s = IO::Socket::UNIX->new(Type => SOCK_DGRAM(), Local => "/dev/log") or die "/dev/log: $!";
        chmod 0666, "/dev/log";
        open(my $out, ">>", $ARGV[0]) or die; $out->autoflush(1);
        print "ready\n";
        while (defined $s->recv(my $m, 65536)) { $m =~ s/\n+$//; print $out "$m\n"; }
    ' "$work/syslog" >"$work/syslog.ready" &
    pids+=($!)
    for _ in $(seq 50); do [ -s "$work/syslog.ready" ] && break; sleep 0.1; done
    [ -S /dev/log ] || fail "could not listen on /dev/log"
else
    say "NOTE: /dev/log exists (a syslog daemon); the syslog-line checks read its output"
fi

# As the unit runs it: the service user, no new privileges, umask 0077.
(umask 0077 && exec setpriv --reuid=backscatter --regid=backscatter --init-groups --no-new-privs -- \
    "$bin" --config "$conf") 2>"$work/milter.stderr" &
milter=$!
pids+=("$milter")
for _ in $(seq 100); do port_busy 7357 && break; sleep 0.1; done
port_busy 7357 || fail "the milter does not listen on 127.0.0.1:7357"
[ "$(stat -c %U /proc/$milter)" = backscatter ] || fail "the milter does not run as backscatter"

# ---------------------------------------------------------------- 4. Postfix
sinkport=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0")->sockport')
sink=/var/spool/postfix/backscatter-test
mkdir -p "$sink"
chown postfix "$sink"
smtp-sink -u postfix -d "$sink/%M." "127.0.0.1:$sinkport" 100 &
pids+=($!)
grep -Eq '^cleanup +unix +n +- +y ' /etc/postfix/master.cf || fail "master.cf: cleanup is not chrooted (not Debian's default?)"
grep -Eq '^smtp +inet +n +- +y ' /etc/postfix/master.cf || fail "master.cf: smtpd is not chrooted (not Debian's default?)"
cat >/etc/postfix/main.cf <<EOF
compatibility_level = 3.6
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.org
relayhost = [127.0.0.1]:$sinkport
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
EOF
# What the guide says to paste, verbatim from the package.
cat /usr/share/doc/backscatter-milter/examples/postfix/main.cf >>/etc/postfix/main.cf
backscatter-milter --config /etc/backscatter-milter/milter.toml postfix-map >/etc/postfix/batv-recipient.regexp || fail "postfix-map"
[ -x /usr/lib/postfix/configure-instance.sh ] && /usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1
postfix start >/dev/null 2>&1 || fail "postfix start"
for _ in $(seq 100); do port_busy 25 && break; sleep 0.1; done

# ---------------------------------------------------------------- 5. mail
delivered() { grep -l -- "$1" "$sink"/* 2>/dev/null | head -1; }
wait_delivered() {
    for _ in $(seq 150); do
        f=$(delivered "$1") && [ -n "$f" ] && { echo "$f"; return 0; }
        sleep 0.2
    done
    postqueue -p >&2
    fail "nothing delivered with '$1'"
}
header() { sed -n "s/^$1: //p" "$2" | head -1; }

swaks -S 2 --server 127.0.0.1:25 --from user@example.org --to friend@remote.example \
    --header "Subject: outbound-1" --body "hello" || fail "swaks outbound"
out=$(wait_delivered "Subject: outbound-1")
from=$(sed -n 's/^X-Mail-Args: <\([^ >]*\)>.*/\1/p' "$out")
case "$from" in
prvs=1[0-9][0-9][0-9][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]=user@example.org) ;;
*) fail "outbound envelope sender not BATV-signed: '$from'" ;;
esac
# Admin commands run as the service user (as root they could leave root-owned
# files in the state dir).
runuser -u backscatter -- "$bin" --config "$conf" verify "$from" >/dev/null ||
    fail "the tag does not verify: $from"
say "outbound mail signed: $from"

# A forged bounce (its original is not ours), relayed from loopback: judged.
fixture=$root/tests/fixtures/corpus/sisimai/maildir/bsd/lhost-sendmail-01.eml
swaks -S 2 --server 127.0.0.1:25 --from '<>' --to user@example.org --data "@$fixture" ||
    fail "swaks forged bounce"
bounce=$(wait_delivered "bouncehammer")
verdict=$(header X-Backscatter "$bounce")
case "$verdict" in
*kind=bounce*verdict=reject*mode=observe*) ;;
*) fail "forged bounce not judged: X-Backscatter: $verdict" ;;
esac
say "forged bounce judged: X-Backscatter: $verdict"

# A bounce to the address we signed: valid tag, delivered to the plain address.
printf 'From: MAILER-DAEMON@remote.example\nTo: %s\nSubject: Undelivered Mail Returned to Sender\n\nreturned-2\n' "$from" >"$work/ndr"
swaks -S 2 --server 127.0.0.1:25 --from '<>' --to "$from" --data "@$work/ndr" || fail "swaks bounce to our tag"
ours=$(wait_delivered "returned-2")
grep -q '^X-Rcpt-Args: <user@example.org>' "$ours" || fail "the bounce to our tag was not delivered to the plain address"
header X-Backscatter "$ours" | grep -q 'batv=valid' || fail "the bounce to our tag: $(header X-Backscatter "$ours")"
say "bounce to our tag: $(header X-Backscatter "$ours")"

# The log: one line per message, keyed by Postfix's queue id, facility mail.
qid=$(sed -n 's/^.*(Postfix) with E\?SMTP id \([0-9A-F]*\).*$/\1/p' "$bounce" | head -1)
[ -n "$qid" ] || qid=$(grep -A2 '^Received: from' "$bounce" | sed -n 's/.*id \([0-9A-F]\{6,\}\).*/\1/p' | head -1)
[ -n "$qid" ] || fail "no queue id in the delivered bounce"
if [ -n "$devlog" ]; then
    for _ in $(seq 50); do grep -q "backscatter-milter\[$milter\]: $qid: " "$work/syslog" && break; sleep 0.1; done
    line=$(grep "backscatter-milter\[$milter\]: $qid: " "$work/syslog" | head -1)
    [ -n "$line" ] || fail "no milter line for $qid in syslog"
    case "$line" in "<22>"*) ;; *) fail "not mail.info (<22>): $line" ;; esac
    grep -q "^<22>.* postfix/cleanup\[[0-9]*\]: $qid: " "$work/syslog" ||
        fail "Postfix's cleanup line for $qid not beside ours"
    say "syslog (facility mail, beside Postfix's): ${line:0:160}"
fi

# SIGTERM: a clean stop.
kill -TERM "$milter"
wait "$milter" || fail "the milter exited $? on SIGTERM"
[ -z "$devlog" ] || grep -q "backscatter-milter\[$milter\]: stopped" "$work/syslog" || fail "no 'stopped' line"
say "all checks passed ($(($(date +%s) - t0)) s)"
