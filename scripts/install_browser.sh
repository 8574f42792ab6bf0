#!/usr/bin/env bash
# Install what the portal's browser tests need, from Debian's packages: chromium (driven by
# Playwright, never a browser Playwright downloads) and a font with Simplified Chinese glyphs
# (without one the pages' Chinese renders as tofu and the tests see nothing wrong in the DOM).
#
#     bash scripts/install_browser.sh      (make browser; make test runs it first)
#
# Idempotent: when chromium is on PATH and fontconfig knows a zh-cn font it installs nothing
# and takes a few milliseconds. Otherwise it runs apt-get as root, or through sudo, and runs
# `apt-get update` only when the package lists are missing or the install fails on stale ones.
set -euo pipefail

# fonts-wqy-microhei: 1.6 MB download, full GB 18030 coverage; fonts-noto-cjk is 56 MB for
# the same purpose. fontconfig provides fc-list, which the check below and the tests use.
FONT_PACKAGE=fonts-wqy-microhei

packages=()
if ! command -v chromium >/dev/null 2>&1; then
  packages+=(chromium)
fi
if ! command -v fc-list >/dev/null 2>&1; then
  packages+=(fontconfig "$FONT_PACKAGE")
elif [ -z "$(fc-list :lang=zh-cn family)" ]; then
  packages+=("$FONT_PACKAGE")
fi

if [ ${#packages[@]} -eq 0 ]; then
  echo "browser: chromium and a zh-cn font are installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "browser: the browser tests need Debian packages ${packages[*]}; run this script as root" \
    "(or install them: apt-get install --no-install-recommends ${packages[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: no apt-get here; install chromium and a font with Simplified Chinese glyphs" \
    "(e.g. ${FONT_PACKAGE} or Noto Sans CJK SC) with this system's package manager" >&2
  exit 1
fi

apt() {
  # chromium-sandbox (its only Recommends) is not needed: the tests run it with --no-sandbox.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"
}
install() {
  apt install --yes --quiet --no-install-recommends "${packages[@]}"
}

echo "browser: installing ${packages[*]} (Debian packages)"
# Lists that do not know chromium (a fresh image) need an update first; lists that know it but
# point at versions the mirror has since dropped make the install fail: update, then try again.
if [ -z "$(apt-cache policy chromium 2>/dev/null | grep -E 'Candidate: [^(]')" ]; then
  apt update --quiet
  install
elif ! install; then
  apt update --quiet
  install
fi

command -v chromium >/dev/null 2>&1 || {
  echo "browser: chromium is still not on PATH after installing" >&2
  exit 1
}
[ -n "$(fc-list :lang=zh-cn family)" ] || {
  echo "browser: fontconfig still knows no zh-cn font after installing ${FONT_PACKAGE}" >&2
  exit 1
}
echo "browser: $(chromium --version 2>/dev/null); zh-cn font: $(fc-list :lang=zh-cn family | head -n1)"
