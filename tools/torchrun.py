"""torchrun, with train.py's bad-input errors as one line and exit code 2.

    python tools/torchrun.py --standalone --nproc_per_node 2 train.py ARGS...

takes torchrun's own arguments and runs torchrun itself (torch.distributed.run, in
this process). What it changes: torchrun ends every failed run with its
ChildFailedError traceback and exit code 1, so a bad key, a batch size of 0 or an
output folder of another run (train.py's UserErrors, exit code 2) drowned in it.
train.py checks its inputs on every rank before the ranks join the process group;
rank 0 prints the one ``error: ...`` line and every rank exits 2. When the first
failed rank exited with 2, this launcher drops torchrun's failure report and exits 2;
any other failure (a crash, a signal) is reported by torchrun exactly as before.
Plain ``torchrun`` works too: the error is then still one line from train.py,
followed by torchrun's own report and exit code 1.
"""
import logging
import sys

USER_ERROR = 2  # train.py's exit code for a bad input (toolbox.errors.UserError)

# the loggers torchrun reports a failed child through ("failed (exitcode: 2)", the
# closing signals sent to the other ranks); torch's logging setup may reset their
# handlers and propagation during a run, not a logger's own filters
REPORTING = ("torch.distributed.elastic.multiprocessing.api",
             "torch.distributed.elastic.agent.server.api",
             "torch.distributed.elastic.agent.server.local_elastic_agent",
             "torch.distributed.launcher.api")


class _Held(logging.Filter):
    """Keeps the records of torchrun's reporting loggers until the run's outcome is
    known: dropped after a user error, else passed on as torchrun would have."""

    def __init__(self):
        super().__init__()
        self.records = []

    def filter(self, record):
        self.records.append(record)
        return False

    def release(self):
        for record in self.records:
            logging.getLogger(record.name).callHandlers(record)
        self.records = []


def user_error(exc):
    """True when the first failed rank of a ChildFailedError exited with USER_ERROR."""
    try:
        _, failure = exc.get_first_failure()
    except Exception:
        return False
    return failure.exitcode == USER_ERROR


def main(argv=None):
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    held = _Held()
    for name in REPORTING:
        logging.getLogger(name).addFilter(held)
    try:
        # the undecorated main: no error-file bookkeeping that would print around ours
        run.run(run.parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as e:
        if user_error(e):
            held.records = []
            sys.exit(USER_ERROR)  # train.py's rank 0 has printed the one error line
        held.release()
        raise
    except BaseException:
        held.release()
        raise
    finally:
        for name in REPORTING:
            logging.getLogger(name).removeFilter(held)
    held.release()


if __name__ == "__main__":
    main()
