"""``python -m clasflow.benchmark --bench-cpu``: the CPU figures of `make bench`."""

import sys

from clasflow.benchmark.cli import main

sys.exit(main())
