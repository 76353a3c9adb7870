"""Compare the instance logs of two benchmark output folders: did a change alter what was committed?

    streamst-bench compare OLD_FOLDER NEW_FOLDER

For every `streaming/<run>/<pair>/instances.log` (and `offline/<pair>/...`) present in both
folders, each instance's committed text (`prediction`) and its non-computation-aware delays are
compared; `elapsed` is not, since it holds the machine's compute time. On the simulated clock
the same engine gives the same predictions and delays, so any difference is a change of
behaviour."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "instances.log"


@dataclass(frozen=True)
class InstanceDiff:
    log: str  # the instance log's path below the folders
    index: int
    field: str  # "prediction" or "delays"
    old: str
    new: str


@dataclass(frozen=True)
class Comparison:
    n_logs: int  # instance logs present in both folders
    n_instances: int  # instances compared
    only_old: tuple[str, ...]  # logs present in the old folder only
    only_new: tuple[str, ...]
    diffs: tuple[InstanceDiff, ...]

    @property
    def same(self) -> bool:
        return not self.diffs and self.n_instances > 0


def compare_folders(old: Path, new: Path) -> Comparison:
    old_logs, new_logs = set(_logs(old)), set(_logs(new))
    diffs: list[InstanceDiff] = []
    n_instances = 0
    for log in sorted(old_logs & new_logs):
        before, after = _records(old / log), _records(new / log)
        for index in sorted(before.keys() | after.keys()):
            n_instances += 1
            a, b = before.get(index, {}), after.get(index, {})
            for name in ("prediction", "delays"):
                if a.get(name) != b.get(name):
                    diffs.append(InstanceDiff(log, index, name, json.dumps(a.get(name), ensure_ascii=False),
                                              json.dumps(b.get(name), ensure_ascii=False)))  # fmt: skip
    return Comparison(
        len(old_logs & new_logs), n_instances, tuple(sorted(old_logs - new_logs)), tuple(sorted(new_logs - old_logs)),
        tuple(diffs),
    )  # fmt: skip


def render(comparison: Comparison) -> str:
    lines = [
        f"{comparison.n_logs} instance logs, {comparison.n_instances} instances compared: "
        + ("same committed text and delays" if comparison.same else f"{len(comparison.diffs)} differences")
    ]
    lines += [f"only in the old folder: {log}" for log in comparison.only_old]
    lines += [f"only in the new folder: {log}" for log in comparison.only_new]
    for diff in comparison.diffs:
        lines += [f"{diff.log} #{diff.index} {diff.field}:", f"  old: {diff.old}", f"  new: {diff.new}"]
    return "\n".join(lines)


def _logs(folder: Path) -> Iterator[str]:
    for path in folder.rglob(LOG_NAME):
        yield str(path.relative_to(folder))


def _records(path: Path) -> dict[int, dict]:
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {record["index"]: record for record in records}
