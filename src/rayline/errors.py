"""User-facing errors. The CLI prints their message (no traceback) and exits non-zero."""


class RaylineError(Exception):
    """An error whose message is meant for the user as it is."""

    exit_code = 1


class ConfigError(RaylineError):
    """The config file or an override is invalid; nothing has run yet."""

    exit_code = 2


class InputError(RaylineError):
    """A whole input file or table is unusable (missing, unreadable, empty, wrong header)."""


class RegistryError(RaylineError):
    """A registry operation cannot be done (unknown version, refused promotion, ...)."""


class ResourceError(RaylineError):
    """The cluster does not have what the config asks for (GPUs, CPUs): raised at once, never a
    wait that cannot end."""
