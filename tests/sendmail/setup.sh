#!/bin/sh
# Unpacks Debian's Sendmail 8.17 (sendmail-bin, sendmail-base, sendmail-cf, m4,
# libwrap0) into DEST without installing anything: apt-get download + dpkg -x.
# Done once: DEST/.complete marks a finished tree, later runs return at once.
# The unpacked sendmail binary loses its setgid bit (the loader ignores
# LD_LIBRARY_PATH for setgid programs, and libwrap0 is found only through it).
# Exit 0: DEST is ready. Exit 1: the packages could not be fetched (message on stderr).
set -eu
dest=$1
[ -f "$dest/.complete" ] && exit 0
command -v apt-get >/dev/null && command -v dpkg >/dev/null || {
  echo "no apt-get/dpkg here" >&2
  exit 1
}
parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.sendmail-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
pkgs="sendmail-bin sendmail-base sendmail-cf m4 libwrap0"
if ! (cd "$work" && apt-get download -q $pkgs) >"$work/log" 2>&1; then
  # Stale or missing package lists (a fresh machine): refresh once, as root.
  if [ "$(id -u)" = 0 ] && apt-get update -q >>"$work/log" 2>&1 &&
    (cd "$work" && apt-get download -q $pkgs) >>"$work/log" 2>&1; then
    :
  else
    echo "cannot download $pkgs:" >&2
    tail -5 "$work/log" >&2
    exit 1
  fi
fi
mkdir "$work/root"
for deb in "$work"/*.deb; do
  dpkg -x "$deb" "$work/root"
done
chmod g-s "$work/root/usr/libexec/sendmail/sendmail"
touch "$work/root/.complete"
rm -rf "$dest"
mv "$work/root" "$dest"
