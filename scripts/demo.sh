#!/usr/bin/env bash
# Sets everything up, then streams a spoken English sample through the engine and prints its
# Chinese translation as it forms. Pass your own file and languages to translate that instead:
#   scripts/demo.sh talk.mp3 --source de --target en
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
if [ $# -gt 0 ]; then
  exec streamst translate --realtime "$@"
fi
sample=${TMPDIR:-/tmp}/streamst-sample.wav
espeak-ng -v en-us -s 150 -w "$sample" \
  "Good morning everyone. Today we are going to talk about how the weather affects the harvest. \
Farmers in the north expect a dry summer this year."
exec streamst translate "$sample" --source en --target zh --realtime
