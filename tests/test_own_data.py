"""The docs' "Use your own data" examples, run as written (on the files they write themselves).

Each docs/<route>.md holds one fenced block opened with ```bash own-data: the test copies it
into a temporary folder, links the repository's modules there and runs it with bash, so the
example a user copies is the example CI runs."""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))


def own_data_block(page: Path) -> str | None:
    found = re.findall(r"```bash own-data\n(.*?)```", page.read_text(), flags=re.S)
    if len(found) > 1:
        raise ValueError(f"{page}: more than one own-data block")
    return found[0] if found else None


@pytest.mark.parametrize("page", [p for p in PAGES if own_data_block(p)], ids=lambda p: p.stem)
def test_own_data_example_runs_as_written(page, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    (tmp_path / "train.py").symlink_to(ROOT / "train.py")  # `python train.py` as in the docs
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", own_data_block(page)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    # every example ends by scoring: its results and tables exist
    results = list(tmp_path.glob("runs/*/results.json"))
    assert results and all(p.with_name("tables.md").is_file() for p in results)
