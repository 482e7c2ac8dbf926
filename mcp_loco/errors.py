"""Errors, split by whose fault they are."""


class LocoError(Exception):
    """Base class: a failure with a message meant for a person."""


class ConfigError(LocoError):
    """The settings are wrong: a bad key, value or file. The message names the key."""


class ModelError(LocoError):
    """The model could not be found, loaded or reached."""


class ModelNotFoundError(ModelError):
    """No model file is available locally, and none could be downloaded."""


class BackendError(ModelError):
    """A backend failed while generating (crash, HTTP error, timeout)."""


class Cancelled(LocoError):
    """The caller cancelled the work."""


class RootError(LocoError):
    """A path given by the caller is not a directory inside an allowed root."""


class BudgetError(LocoError):
    """The time budget cannot buy even the shortest answer on this machine: the message says what would."""
