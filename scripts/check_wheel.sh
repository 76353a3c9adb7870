#!/usr/bin/env bash
# Builds a wheel from a clean export of the source tree (what a commit of it would hold: tracked and
# new files, nothing git ignores), installs it with its dependencies into a fresh virtual environment,
# and runs the console scripts and imports from outside the repository, so that nothing is found in
# the source tree by accident. Fails if a module, a package's data or an entry point is missing, or if
# the wheel installs anything beside the `streamst` package.
# Run scripts/setup.sh first: it leaves the llama-cpp-python wheel in ~/.cache/streamst/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
STREAMST_HOME=${STREAMST_HOME:-$HOME/.cache/streamst}
wheels="$STREAMST_HOME/wheels"

say() { printf '\033[1m[check_wheel]\033[0m %s\n' "$*" >&2; }

if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  say "no llama-cpp-python wheel in $wheels; run scripts/setup.sh first (it builds one)"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/streamst-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "exporting the source tree"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done |
  tar --null -T - -cf - | tar -xf - -C "$work/src"

say "building the wheel"
"$PYTHON" -m pip wheel -q --no-deps "$work/src" -w "$work/dist"
wheel=$(ls "$work"/dist/streamst-*.whl)

say "checking what $(basename "$wheel") holds"
"$PYTHON" - "$wheel" "$work/src" <<'EOF'
"""Every module and data file of the mapped folders is in the wheel, under `streamst/` only."""
import sys
import zipfile
from pathlib import Path

wheel, src = sys.argv[1], Path(sys.argv[2])
FOLDERS = {"streamst": "streamst", "models": "streamst/models", "server": "streamst/server",
           "client": "streamst/client", "benchmarks": "streamst/benchmarks"}
DATA = ("models/*.toml", "server/static/*")
names = set(zipfile.ZipFile(wheel).namelist())
top = {name.split("/")[0] for name in names}
problems = [f"installs a top-level {t!r}" for t in sorted(top) if t != "streamst" and not t.endswith(".dist-info")]
wanted = [path for folder in FOLDERS for path in (src / folder).rglob("*.py")]
wanted += [path for pattern in DATA for path in src.glob(pattern)]
for path in sorted(wanted):
    folder, *rest = path.relative_to(src).parts
    if "/".join((FOLDERS[folder], *rest)) not in names:
        problems.append(f"lacks {path.relative_to(src)}")
for problem in problems:
    print(f"the wheel {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

say "installing it into a fresh virtual environment"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --find-links "$wheels" "$wheel"

say "running the console scripts and imports outside the repository"
cd "$work"
unset PYTHONPATH
export PATH="$work/venv/bin:$PATH"
run() { "$@" >/dev/null || { say "failed: $*"; exit 1; }; }
run streamst --help
run streamst models list
run streamst-server --help
run streamst-bench --help
run streamst-bench load --help
run python -c "import streamst.engine, streamst.sessions.direct, streamst.translators.llama_cpp, streamst.server.app, streamst.benchmarks.cli, streamst.client.stream"
say "ok: $(basename "$wheel") installs and runs"
