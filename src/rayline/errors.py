"""User-facing errors. The CLI prints their message (no traceback) and exits non-zero."""


class RaylineError(Exception):
    """An error whose message is meant for the user as it is."""

    exit_code = 1


class ConfigError(RaylineError):
    """The config file or an override is invalid; nothing has run yet."""

    exit_code = 2


class InputError(RaylineError):
    """A whole input file or table is unusable (missing, unreadable, empty, wrong header)."""


class StorageError(RaylineError):
    """The storage root cannot be used (not writable, unreachable)."""


class RegistryError(RaylineError):
    """A registry operation cannot be done (unknown version, refused promotion, ...)."""


class ResourceError(RaylineError):
    """The cluster does not have what the config asks for (GPUs, CPUs): raised at once, never a
    wait that cannot end."""


def root_cause(e: BaseException) -> BaseException:
    """The innermost exception behind a wrapped one: Ray Train's worker-group errors (the first
    failed rank), Ray task errors (`.cause`) and Python's chain (`__cause__`)."""
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "controller_failure", None)
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            inner = failures[min(failures)]  # the lowest failed rank
        inner = inner if isinstance(inner, BaseException) else getattr(e, "cause", None)
        inner = inner if isinstance(inner, BaseException) else e.__cause__
        if not isinstance(inner, BaseException):
            break
        e = inner
    return e


def failure_line(e: BaseException) -> str:
    """'ExceptionType: first line of its message' for the root cause of `e`: what a worker raised,
    not the wrapper Ray put around it."""
    cause = root_cause(e)
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    # A Ray task error that kept no cause starts with the task's name and a traceback.
    text = next((ln for ln in lines if not ln.startswith(("ray::", "Traceback", "File ", "^"))), lines[0] if lines else "")
    name = type(cause).__name__
    if name.startswith("RayTaskError(") and name.endswith(")"):
        name = name[len("RayTaskError("):-1]
    return f"{name}: {text}" if text else name
