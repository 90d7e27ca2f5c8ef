"""
What the atheris targets in this directory share: the repository on
C{sys.path} (for L{lbkit} and the reference grammar in L{tests.grammar}), and
a seed corpus written into an empty corpus directory before fuzzing starts.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Callable, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def splitAt(data: bytes, cut: int) -> list[bytes]:
    """C{data} in two pieces, cut at C{cut} modulo its length + 1."""
    cut %= len(data) + 1
    return [data[:cut], data[cut:]]


def main(testOneInput: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """
    Run C{testOneInput} under atheris with the command line's libFuzzer
    flags (e.g. C{-max_total_time=20}, C{-runs=10000}) and corpus
    directories; an empty first corpus directory gets C{seeds} first.
    """
    import atheris

    corpora = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpora and os.path.isdir(corpora[0]) and not os.listdir(corpora[0]):
        for seed in seeds:
            name = os.path.join(corpora[0], "seed-" + hashlib.sha1(seed).hexdigest()[:16])
            with open(name, "wb") as f:
                f.write(seed)
    atheris.Setup(sys.argv, testOneInput)
    atheris.Fuzz()
