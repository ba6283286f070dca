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


def api_doctests() -> list[doctest.DocTest]:
    """The docstrings of sparsehead.api that hold examples: the module's and each function's."""
    import sparsehead.api

    return [test for test in doctest.DocTestFinder().find(sparsehead.api) if test.examples]


def run_examples(tests: list[doctest.DocTest], folder: Path) -> doctest.TestResults:
    """Run `tests`, each in a folder of its own under `folder`; the module docstring's `tmp` is that folder."""
    runner = doctest.DocTestRunner()
    start = Path.cwd()
    for test in tests:
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
    results = run_examples(api_doctests(), Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"sparsehead.api: {results.attempted} docstring examples, {results.failed} failed")
    sys.exit(1 if results.failed or not results.attempted else 0)
