"""Shared fixtures: the test pair (graf 1→3 from ../shared when present, else the sample pair wbs
ships) and the `wbs` command line to compare with (WBS_BIN, else target/release/wbs)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GRAF = REPO.parent / "shared" / "datasets" / "OxAff" / "graf"


def pair():
    if (GRAF / "img1.png").is_file():
        return GRAF / "img1.png", GRAF / "img3.png", GRAF / "H1to3p"
    sample = REPO / "data" / "sample"
    print(f"(../shared absent: using {sample} instead of graf 1→3)")
    return sample / "img1.png", sample / "img2.png", sample / "H1to2p"


@pytest.fixture(scope="session")
def images():
    return pair()


@pytest.fixture(scope="session")
def cli():
    """The wbs binary; its absence fails the tests that compare with it (no silent skip)."""
    path = Path(os.environ.get("WBS_BIN", REPO / "target" / "release" / "wbs"))
    if not path.is_file():
        pytest.fail(f"no wbs binary at {path}: build it (cargo build --release) or set WBS_BIN")
    return path


def run_cli(cli, *args):
    out = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    return out
