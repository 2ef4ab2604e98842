"""Flink functions (keyed, windowed, broadcast operators): thin wrappers around core/.

Importing the package (which every Python worker does to unpickle the functions) sets the level of
the project's loggers to ``FLINKREC_WORKER_LOG_LEVEL`` (default INFO): the embedded Python worker's
root logger lets DEBUG records through, and formatting and writing the per-event debug messages of
the algorithm core cost about a tenth of the worker's time.
"""

import logging
import os

for _name in ("core", "operators", "udfs"):
    logging.getLogger(_name).setLevel(os.environ.get("FLINKREC_WORKER_LOG_LEVEL", "INFO").upper())
