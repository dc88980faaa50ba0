"""Tee stdout into ``<output_dir>/log.txt`` (as dassl.utils.setup_logger)."""
import os
import os.path as osp
import sys
import time

from .tools import mkdir_if_missing


class Logger:
    def __init__(self, fpath):
        self.console = sys.stdout
        mkdir_if_missing(osp.dirname(fpath))
        self.file = open(fpath, "a", buffering=1)  # line-buffered: tail -f shows each line

    def write(self, msg):
        self.console.write(msg)
        self.file.write(msg)

    def flush(self):
        self.console.flush()
        self.file.flush()
        os.fsync(self.file.fileno())

    def isatty(self):
        return False

    def close(self):
        self.file.close()


def setup_logger(output=None):
    """Log to ``output/log.txt`` (or to ``output`` if it names a .txt file).

    A second log file in the same folder gets a time stamp, so a resumed or
    repeated run never overwrites the first log.
    """
    if output is None:
        return
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = osp.join(output, "log.txt")
    if osp.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    if isinstance(sys.stdout, Logger):
        sys.stdout.close()
        sys.stdout = sys.stdout.console
    sys.stdout = Logger(fpath)
