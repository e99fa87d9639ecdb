"""Test-wide settings.

One torch thread: the tiny models gain nothing from a second one, and on a machine that other
jobs share, OpenMP threads spinning against them made these tests 10-30x slower. Set before
torch is imported, and inherited by the subprocesses the end-to-end tests start.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
