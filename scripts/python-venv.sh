#!/usr/bin/env bash
# python-venv.sh - the Python virtualenv of the interoperability tests: Confluent's own client
# (confluent-kafka with its Avro serializer and schema registry client, pinned in
# scripts/python/requirements-confluent.txt) from PyPI, installed under target/, never into the
# system. Prints the virtualenv's python alone on stdout.
#
# Usage: scripts/python-venv.sh
#
# Installs once; runs again only when the requirements file changes. Needs python3 with venv.
set -euo pipefail

readonly PROG=python-venv SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

readonly VENV=$REPO/target/python-venv
readonly REQUIREMENTS=$SCRIPT_DIR/python/requirements-confluent.txt
readonly STAMP=$VENV/.requirements

[[ $# == 0 ]] || { usage; exit 2; }
command -v python3 >/dev/null || die "python3 is needed for the interoperability tests"
if [[ ! -f $STAMP ]] || ! cmp -s "$REQUIREMENTS" "$STAMP"; then
  say "installing $(grep -v '^#' "$REQUIREMENTS" | xargs) into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" \
    || die "pip install of $REQUIREMENTS failed"
  cp "$REQUIREMENTS" "$STAMP"
fi
echo "$VENV/bin/python"
