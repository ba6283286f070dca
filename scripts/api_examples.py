"""Run the docstring examples of the Python API (sparsehead.api) as a reader would: each docstring in a fresh
folder of its own, against the sparsehead that Python imports. tests/test_docs.py runs them on the tiny model;
scripts/wheel_check.sh on the installed wheel, as written.

    python scripts/api_examples.py FOLDER    # exit status 1 when an example fails
"""

from __future__ import annotations

import doctest
import os
import sys
from pathlib import Path


def run_examples(folder: Path) -> doctest.TestResults:
    """Run every example; the module docstring's `tmp` is its folder too."""
    import sparsehead.api

    runner = doctest.DocTestRunner()
    start = Path.cwd()
    for test in doctest.DocTestFinder().find(sparsehead.api):
        if not test.examples:
            continue
        here = Path(folder, test.name).resolve()
        here.mkdir(parents=True)
        test.globs["tmp"] = here
        os.chdir(here)
        try:
            runner.run(test)
        finally:
            os.chdir(start)
    return runner.summarize(verbose=False)


if __name__ == "__main__":
    results = run_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"sparsehead.api: {results.attempted} docstring examples, {results.failed} failed")
    sys.exit(1 if results.failed or not results.attempted else 0)
