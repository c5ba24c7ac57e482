import contextlib
import logging
import os
import sys

from trainer.cli import main

code = main()
# Everything the run owes is written by now (report, termination message, uploads; its threads joined).
# Tearing down an interpreter that has loaded torch and Ultralytics takes seconds (bench/fixed_costs.py:
# "exit"), paid by every Job: flush what is buffered and leave without it.
logging.shutdown()
for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
os._exit(code)
