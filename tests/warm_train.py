"""Run train.py for the tests without paying its imports each time.

Every `python train.py` spends about 5 s of CPU importing torch and torchvision (which
imports torch._dynamo) before it reads its first argument; the suite starts train.py
about a hundred times. Here a server process imports train.py's modules once and forks
one child per run. The child runs train.py as `__main__` (runpy), as `python train.py
ARGV` would, in its own process: its own working folder, umask, environment, stdin/stdout/
stderr files, exit code, and a fresh interpreter's random state and thread count.

What a forked child cannot reproduce is what a fresh interpreter does *before* train.py
runs: import-time output and a new hash seed per process. Hence:
- two servers with different PYTHONHASHSEED serve the runs in turn, so two runs of one
  test never share a hash seed (a result that depends on set order still shows);
- tests/test_warm_train.py runs the same cases through both paths and checks that exit
  code, stdout, stderr and results.json agree;
- `run_train(..., fresh=True)` (or TEST_FRESH_TRAIN=1 for the whole suite) uses a real
  `python train.py` subprocess.
"""
import atexit
import json
import os
import os.path as osp
import random
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import traceback

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(ROOT, "train.py")


# ---------------------------------------------------------------- server side
def _serve():
    sys.path[0] = ROOT  # as for `python train.py` (not this file's folder)
    # What a fresh interpreter's torch would use; the server itself stays on one thread
    # so that no OpenMP pool exists when it forks.
    import torch
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    import numpy
    try:
        import train  # noqa: F401  (the imports every run would repeat)
    except BaseException:  # broken code: each run imports it again and shows its own error
        pass

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the server itself prints goes to stderr, not the replies
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req, torch, numpy, default_threads)  # never returns
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


def _child(req, torch, numpy, default_threads):
    code = 1
    try:
        os.setpgid(0, 0)  # the client kills the whole group on a timeout
        os.chdir(req["cwd"])
        os.umask(req["umask"])
        os.environ.clear()
        os.environ.update(req["env"])
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
        for target, path in ((1, req["stdout"]), (2, req["stderr"])):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, target)
            os.close(fd)
        # buffering as in a fresh process writing to files: stdout by blocks, stderr by lines
        sys.stdin = sys.__stdin__ = open(0, closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)
        # a fresh interpreter's random state: Python and NumPy from the OS, torch's default
        random.seed()
        numpy.random.seed()
        torch.manual_seed(torch.initial_seed())
        threads = req["env"].get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0
                              else default_threads)
        script = req.get("script") or TRAIN
        sys.argv = [script, *req["argv"]]
        sys.path[0] = osp.dirname(script)
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException as e:
            _print_run_traceback(e, script)
            code = 1
        atexit._run_exitfuncs()  # as an interpreter does at exit (logging, tqdm, ...)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _print_run_traceback(exc, script):
    """The traceback a fresh `python SCRIPT` prints: from the script's own frame on,
    without this harness's and runpy's frames above it."""
    tb = exc.__traceback__
    while tb is not None and osp.abspath(tb.tb_frame.f_code.co_filename) != osp.abspath(script):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


# ---------------------------------------------------------------- client side
class _Server:
    def __init__(self, hash_seed):
        env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
        env.pop("OMP_NUM_THREADS", None)  # the default thread count is what it learns
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv, env, cwd, timeout, script=TRAIN):
        with tempfile.TemporaryDirectory(prefix="warm_train_") as tmp:
            out, err = osp.join(tmp, "stdout"), osp.join(tmp, "stderr")
            umask = os.umask(0)
            os.umask(umask)
            self.proc.stdin.write(json.dumps({"argv": list(argv), "env": env, "cwd": cwd,
                                              "umask": umask, "stdout": out, "stderr": err,
                                              "script": script})
                                  + "\n")
            self.proc.stdin.flush()
            try:
                # the first request also waits for the server's imports (slow on a busy machine)
                pid = json.loads(self._line(timeout))["pid"]
            except subprocess.TimeoutExpired:
                self.kill()  # it may answer later: never read a stale reply
                raise RuntimeError("the warm train.py server did not answer") from None
            try:
                reply = self._line(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self._line(60)
                except subprocess.TimeoutExpired:
                    self.kill()
                raise subprocess.TimeoutExpired([TRAIN, *argv], timeout)
            returncode = json.loads(reply)["returncode"]
            with open(out, errors="replace") as f, open(err, errors="replace") as g:
                return subprocess.CompletedProcess([sys.executable, script, *argv], returncode,
                                                   f.read(), g.read())

    def _line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("warm_train server", timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the warm train.py server died (exit {self.proc.wait()})")
        return line

    def kill(self):
        """Stop a server whose replies can no longer be trusted (runs go elsewhere)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the server ends at the end of its input
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if not pipe.closed:
                pipe.close()


_servers = []
_turn = [0]


def run(argv, env, cwd=ROOT, timeout=600, script=TRAIN):
    """`python train.py ARGV` (or `python SCRIPT ARGV`) in CWD with ENV (the full
    environment) -> CompletedProcess. A server that has died (it never should) is not
    the run's error: the run then goes to a fresh interpreter, which shows its own."""
    if not _servers:
        seed = random.SystemRandom().randrange(1, 2**31)
        _servers.extend([_Server(seed), _Server(seed + 1)])
        atexit.register(lambda: [s.close() for s in _servers])
    server = _servers[_turn[0] % len(_servers)]
    _turn[0] += 1
    if server.proc.poll() is None:
        try:
            return server.run(argv, env, cwd, timeout, script)
        except (RuntimeError, BrokenPipeError, ValueError, KeyError):
            server.kill()  # died, hung or out of step: this run and later ones go fresh
    return subprocess.run([sys.executable, script, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
