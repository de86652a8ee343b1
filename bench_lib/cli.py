"""The command line: `run_benchmark.py`, `python -m bench_lib` and the `edit-bench` console script all come here.

Everything a user can get wrong is checked before a model library is imported, so `--help`, a bad key or
value, a dataset that does not exist and a model name that can't be loaded all answer at once: one line on
stderr, exit code 2. Only then does the run import torch (through `bench_lib.runner`).

Exit codes: 0 the run finished and scored at least one sample (per-sample failures included), 2 a bad config,
dataset or model name, 1 any other error: among them a run that stopped early because its first samples all
failed with the same error, a finished run that scored nothing (its reports are written), a wrong launch (see
bench_lib.failures); those three are one line on stderr.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Optional

from .config import ConfigError
from .failures import RunFailed
from .options import parse_config

UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}  # exit code 1 with one line


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Launchers set RANK in every process: only global rank 0 logs progress; all ranks log warnings.
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    try:
        cfg = parse_config(argv)
        if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
            logging.getLogger("run_benchmark").info("no --config given: running the offline smoke recipe %s",
                                                    cfg.recipe)
        from .preflight import preflight

        loaded = preflight(cfg)  # every user mistake found so far without torch
        from .runner import run

        run(cfg, loaded=loaded)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        # the output folder can't be written (or read): one line says why; the traceback adds nothing
        logging.getLogger("run_benchmark").debug("stopped by", exc_info=True)
        print(f"error: {err.strerror}: {err.filename}" if err.filename else f"error: {err}", file=sys.stderr)
        return 1
    except RunFailed as err:  # the records (and, for a finished run, the reports) are kept
        if not err.reported:
            print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
