"""Errors caused by user input (config, data, weights).

``train.py`` and the tools print these as one line and exit non-zero instead
of showing a traceback: the message itself must name the problem and the fix.
"""


class UserError(Exception):
    """A problem the user can fix; the message says how."""


class RegistryError(UserError, KeyError):
    """Lookup of a name that was never registered."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


def one_line(exc):
    """The last meaningful line of an exception's message.

    DataLoader workers re-raise errors with the worker traceback in the
    message; the user only needs the final line.
    """
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    marker = "UserError: "
    if marker in last:
        last = last.split(marker, 1)[1]
    return last


def check_choice(name, value, choices):
    """Raise a UserError unless ``value`` is one of ``choices``; ``name`` is the
    config key (or option) the user set, e.g. ``TRAINER.COOP_MT.MODE``."""
    if value not in choices:
        raise UserError(f"{name} must be one of {tuple(choices)}, got '{value}'")


def yaml_error(what, exc):
    """A UserError for a YAML syntax error in ``what`` (a file name), naming
    the line and column the parser stopped at."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"
    problem = getattr(exc, "problem", None) or one_line(exc)
    ctx, ctx_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if ctx and ctx_mark:  # e.g. 'while scanning a quoted scalar' that began earlier
        where += f", {ctx} that starts at line {ctx_mark.line + 1}"
    return UserError(f"{what} is not valid YAML ({problem} at {where}); fix that line "
                     "(KEY: VALUE, nested keys indented with spaces)")
