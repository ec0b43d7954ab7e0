#!/usr/bin/env bash
# Fetches the texts of the accuracy table (docs/accuracy.md) from the Debian
# package gnu-standards (texts this project did not write) and converts them
# to plain text:
#   DIR/gnu-standards.txt  GNU Coding Standards       (evaluation)
#   DIR/gnu-maintain.txt   Information for Maintainers (calibration)
#
# usage: scripts/fetch-eval-text.sh [DIR]     (default: build/eval-text)
# Needs apt-get (a Debian/Ubuntu package index) and python3.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$src/build/eval-text}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
# apt-get download runs as _apt when it can; a private directory is fine.
chmod 755 "$work"
apt-get download gnu-standards >/dev/null
deb="$(ls gnu-standards_*.deb)"
dpkg-deb -x "$deb" root
doc=root/usr/share/doc/gnu-standards
python3 "$src/scripts/html_to_text.py" "$doc/standards.html" "$out/gnu-standards.txt"
python3 "$src/scripts/html_to_text.py" "$doc/maintain.html" "$out/gnu-maintain.txt"
echo "package: $deb"
(cd "$out" && sha256sum gnu-standards.txt gnu-maintain.txt && wc -c gnu-standards.txt gnu-maintain.txt)
