"""Entry point of a measuring process: ``python -m benchmarks.worker '<job as JSON>'``.

Runs one :class:`~benchmarks.job.Job` and prints its result as one JSON line after
:data:`~benchmarks.job.RESULT_TAG`. Started by :func:`benchmarks.job.run_job`.
"""

from __future__ import annotations

import json
import sys

from .job import RESULT_TAG, Job, execute


def main(argv: list[str]) -> int:
    """Run the job given as the single JSON argument; print its result line."""
    if len(argv) != 1:
        print("usage: python -m benchmarks.worker '<job as JSON>'", file=sys.stderr)
        return 2
    result = execute(Job.from_dict(json.loads(argv[0])))
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
