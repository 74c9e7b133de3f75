"""Exceptions a user can act on.

Every error imprint raises on bad input is an `ImprintError`; the CLI prints its message as one line on
stderr and exits non-zero. Anything else escaping is a bug.
"""


class ImprintError(Exception):
    """Base class: a problem the user can fix (bad path, bad flag, unknown model...)."""


class IngestError(ImprintError):
    """A file could not be read or holds no usable text."""


class ModelError(ImprintError):
    """A base model is unknown or cannot be loaded."""


class ConfigError(ImprintError):
    """A configuration value or override is invalid."""


class NotFoundError(ImprintError):
    """A named thing (module, dataset, document) does not exist in the workspace."""


class WorkspaceError(ImprintError):
    """The workspace cannot be opened or written: read-only, or its database is not an imprint database."""


class TrainingError(ImprintError):
    """A training run stopped or failed its own check (non-finite steps, a module that learned nothing)."""


class ImprintWarning(UserWarning):
    """Something the user should know that did not stop the work; the CLI prints it as one line."""
