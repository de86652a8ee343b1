"""`python -m bench_lib [--config RECIPE] [--key value ...]`: the same as `run_benchmark.py` and `edit-bench`."""

import sys

from .cli import main

sys.exit(main())
