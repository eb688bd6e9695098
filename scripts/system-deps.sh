#!/usr/bin/env bash
# The one list of system (Debian) packages that the tests need, and the one place that installs them.
#
#   bash scripts/system-deps.sh           install what is missing (root with apt-get), else print the command
#   bash scripts/system-deps.sh --check   install nothing: exit 1 with the command when something is missing
#
# Used by `make system-deps` (and so `make test`) and by .ci/run. A missing package is an error here, not a
# skipped test later: the tests that need these are the ones that prove the metrics work on real speech.
set -euo pipefail

# One package per line: "<debian package>  <who needs it>". Adding a package is adding a line.
PACKAGES=(
  "espeak-ng              regenerates the demo dataset (tests/test_demo_data.py); synthetic voices in speaker-check tests"
  "sox                    qwen-tts' audio helpers (its import looks for the sox binary)"
  "pocketsphinx-testdata  human speech clips (LibriVox and others) that the metric and speaker-check tests score"
  "chromium               the real headless browser of the MLflow UI test"
  "chromium-driver        chromedriver, which drives chromium in the MLflow UI test"
  "postgresql             study and MLflow backend in the scale-out tests"
  "slurmctld              the single-node SLURM test (controller)"
  "slurmd                 the single-node SLURM test (node daemon)"
  "slurm-client           the single-node SLURM test (sbatch, squeue)"
  "munge                  the single-node SLURM test (authentication)"
)

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# A data package (pocketsphinx-testdata) has no command, so dpkg's word is what counts where dpkg exists.
installed() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
  else
    command -v "$1" >/dev/null 2>&1
  fi
}

missing=()
for line in "${PACKAGES[@]}"; do
  pkg=${line%% *}
  installed "$pkg" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get install -y ${missing[*]}"
if [ "$check_only" -eq 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
[ "$(id -u)" -eq 0 ] || cmd="sudo $cmd"
{
  echo "system-deps: missing system packages: ${missing[*]}"
  for line in "${PACKAGES[@]}"; do
    for m in "${missing[@]}"; do [ "${line%% *}" = "$m" ] && echo "  - $line"; done
  done
  echo "fix: run this once, then run the command again:"
  echo "  $cmd"
} >&2
exit 1
