#!/usr/bin/env bash
# man.sh - generates the man pages and shell completions of the four binaries from their clap
# definitions (crates/rebound-xtask), so they always match the flags.
#
# Usage: scripts/man.sh [OUT]
#
# Writes OUT/man/man1/*.1 (one page per binary and per subcommand: `man rebound-dlq-replay`) and
# OUT/completions/{bash,zsh,fish}/ (one file per binary); OUT defaults to target/shell-docs.
# Read a page without installing it: `man -l target/shell-docs/man/man1/rebound-dlq-replay.1`.
# The test command runs it, so a definition clap_mangen or clap_complete cannot render fails CI.
set -euo pipefail

readonly PROG=man.sh SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO"

case ${1:-} in
  -h | --help) usage; exit 0 ;;
esac
out=${1:-target/shell-docs}
cargo run --quiet --locked -p rebound-xtask -- shell-docs "$out" >&2
say "man pages in $out/man (MANPATH=$out/man man rebound), completions in $out/completions"
