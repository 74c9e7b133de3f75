#!/usr/bin/env bash
# Fetch Debian's Chromium, and the shared libraries this machine lacks for it, into a cache folder without
# installing anything system-wide (no root needed), for the test that renders report.html in a headless browser.
#
#   scripts/get-chromium.sh [DIR]     default DIR: ${IMPRINT_CACHE:-~/.cache/imprint}/chromium
#
# apt resolves the dependencies against what is installed, downloads the missing .debs into DIR/debs, and
# `dpkg -x` unpacks them into DIR/root; imprint/evaluate/report/browser.py then runs DIR/root/usr/lib/chromium/
# chromium with LD_LIBRARY_PATH pointing at the unpacked libraries. A chromium already on PATH is used as is.
set -euo pipefail

dir="${1:-${IMPRINT_CACHE:-$HOME/.cache/imprint}/chromium}"
if command -v chromium >/dev/null 2>&1; then
  echo "get-chromium: using $(command -v chromium) on PATH"
  exit 0
fi
if [ -x "$dir/root/usr/lib/chromium/chromium" ]; then
  echo "get-chromium: already unpacked in $dir/root"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
  echo "get-chromium: needs apt-get and dpkg (Debian/Ubuntu); otherwise install Chromium and set IMPRINT_CHROMIUM" >&2
  exit 1
fi

mkdir -p "$dir/debs/partial" "$dir/apt/lists/partial" "$dir/apt/cache"
apt_opts=(-o Debug::NoLocking=1 -o Dir::Cache::archives="$dir/debs")
download() { apt-get install -y -q --download-only --no-install-recommends "${apt_opts[@]}" "$@" chromium; }
if ! download; then
  # No package lists yet (a fresh machine): fetch them into a private folder, so no root is needed.
  private=(-o Dir::State::Lists="$dir/apt/lists" -o Dir::Cache="$dir/apt/cache")
  apt-get update -q -o Debug::NoLocking=1 "${private[@]}"
  download "${private[@]}"
fi

staging="$(mktemp -d "$dir/root.XXXXXX")"
for deb in "$dir"/debs/*.deb; do
  dpkg -x "$deb" "$staging"
done
if [ ! -x "$staging/usr/lib/chromium/chromium" ]; then
  echo "get-chromium: the downloaded packages hold no usr/lib/chromium/chromium" >&2
  exit 1
fi
rm -rf "$dir/root" && mv "$staging" "$dir/root"
rm -rf "$dir/debs" "$dir/apt"
echo "get-chromium: unpacked $(ls "$dir/root/usr/lib/chromium/chromium") ($(du -sh "$dir/root" | cut -f1))"
