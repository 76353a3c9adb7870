#!/usr/bin/env bash
# Sets everything up (as scripts/setup.sh), then runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests cover the optional parts too: the SenseVoice and transformers backends need torch.
export STREAMST_EXTRAS=${STREAMST_EXTRAS:-test,bench,mic,torch}
scripts/setup.sh
. .venv/bin/activate
exec python -m pytest "$@"
