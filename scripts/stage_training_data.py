"""Copy the training data into a folder of this repository, within a size budget.

For a GPU machine that receives the repository and little else (the device tool sends the
working tree and the folders it is told to carry, 64 MiB in all). From the repository root:

    .venv/bin/python scripts/stage_training_data.py [--data ../shared/data] [--part K]

It copies what `allinone train` reads (`allinone.train.data`): all DIV2K crops (training and
validation), the FMD targets and raw frames of the training fields, and as many BSD432 photos
as the budget leaves room for. The budget is 64 MiB less the files git would send, less 1 MiB.
When BSD432 does not fit whole, `--part K` takes the K-th window of that many photos (wrapping
round), so that successive runs cover all of it. The destination (default `.data`, ignored by
git) is replaced; a folder this script did not stage is never touched.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from allinone.train.data import data_root, real_pair_paths, training_paths

MIB = 1024 * 1024
MARKER = ".staged-training-data"


def travelling_bytes(repo: Path) -> int:
    """Bytes of the files git would send: tracked, and untracked but not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    paths = (repo / name.decode() for name in listed if name)
    return sum(path.stat().st_size for path in paths if path.is_file())


def photo_window(photos: list[Path], room: int, part: int) -> list[Path]:
    """The `part`-th run of consecutive photos (wrapping round) whose sizes fit in `room`."""
    sizes = [path.stat().st_size for path in photos]
    count, used = 0, 0
    for size in sorted(sizes):
        if used + size > room:
            break
        count, used = count + 1, used + size
    start = part * count
    window = [photos[(start + i) % len(photos)] for i in range(count)]
    while window and sum(path.stat().st_size for path in window) > room:
        window.pop()
    return window


def stage(root: Path, dest: Path, budget: int, part: int) -> tuple[list[Path], int]:
    """Copy the training files under `root` to `dest`; return (the files, BSD432's size)."""
    photos, microscopy, validation = training_paths(root, validation_images=8)
    bsd = [path for path in photos if path.parent.parent.name == "BSD432"]
    required = [path for path in photos if path not in bsd] + validation + microscopy
    required += [noisy for noisy, _ in real_pair_paths(root)]
    room = budget - sum(path.stat().st_size for path in required)
    if room < 0:
        sys.exit(f"the budget ({budget / MIB:.1f} MiB) does not hold even the required files")
    chosen = bsd if sum(p.stat().st_size for p in bsd) <= room else photo_window(bsd, room, part)
    if dest.exists():
        if not (dest / MARKER).exists():
            sys.exit(f"{dest} exists and was not staged by this script; choose another --dest")
        shutil.rmtree(dest)
    files = required + chosen
    for path in files:
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (dest / MARKER).write_text(f"BSD432 part {part}\n")
    return files, len(bsd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the shared data folder (default: $ALLINONE_DATA)")
    parser.add_argument("--dest", default=".data", help="where to stage (default: .data)")
    parser.add_argument("--part", type=int, default=0, help="which window of BSD432 (default 0)")
    parser.add_argument("--budget-mib", type=float, help="default: 64 less what git sends, less 1")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    if args.budget_mib is None:
        budget = 63 * MIB - travelling_bytes(repo)
    else:
        budget = int(args.budget_mib * MIB)
    files, bsd_total = stage(data_root(args.data), Path(args.dest), budget, args.part)
    size = sum(path.stat().st_size for path in files)
    bsd = sum(path.parent.parent.name == "BSD432" for path in files)
    print(f"staged {len(files)} files, {size / MIB:.1f} MiB, in {args.dest}")
    print(f"BSD432: {bsd} of {bsd_total} photos (part {args.part})")


if __name__ == "__main__":
    main()
