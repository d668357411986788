"""Taking over the state a run with another --workers count left behind.

Which state dirs a process takes over (`orphans`), and moving their dead letters in
(`take_over_dead_letters`); their write-ahead logs are copied in by the WalStore at recovery.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("logdist.workers")


def orphans(state_dir: str | Path, index: int, n: int, worker: bool) -> list[Path]:
    """State dirs whose write-ahead log and dead letters this process takes over: those a run
    with another --workers count left. A single distributor takes every <state>/worker-<k>;
    worker i of n takes <state> itself (a single distributor's) if i == 0, and every
    <state>/worker-<k> with k >= n and k % n == i."""
    root = Path(state_dir)
    found = []
    if root.is_dir():
        for p in root.iterdir():
            k = p.name.removeprefix("worker-")
            if p.name.startswith("worker-") and k.isdigit() and p.is_dir():
                found.append((int(k), p))
    found.sort()
    if not worker:
        return [p for _, p in found]
    mine = [p for k, p in found if k >= n and k % n == index]
    return ([root] if index == 0 else []) + mine


def take_over_dead_letters(src_state: Path, dst_state: Path) -> int:
    """Move the dead letters of another state dir into ours (names kept, clashes renamed)."""
    src, dst = src_state / "dead-letters", dst_state / "dead-letters"
    if not src.is_dir():
        return 0
    dst.mkdir(parents=True, exist_ok=True)
    moved = 0
    for f in sorted(src.glob("*.dl")):
        target = dst / f.name
        if target.exists():
            target = dst / f"{f.stem}-{src_state.name}{f.suffix}"
        f.rename(target)
        moved += 1
    if moved:
        log.warning("took over %d dead letters from %s", moved, src)
    return moved
