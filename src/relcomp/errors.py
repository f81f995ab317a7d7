"""Error types. The CLI turns any :class:`RelcompError` into a one-line message and exit code 2."""


class RelcompError(Exception):
    """Base class of every error relcomp raises on purpose (bad input, missing data, ...)."""


class DataError(RelcompError):
    """A data file is missing, malformed or does not match what was expected."""


class ChecksumError(DataError):
    """A file's SHA-256 does not match the known sum."""


class FetchError(DataError):
    """Every source for a data file failed."""


class ProvenanceError(DataError):
    """A stored pair set was built from another dataset, split or setting."""


class CheckpointError(RelcompError):
    """A checkpoint or weights file is missing, corrupt or unsafe."""


class WriteError(RelcompError):
    """A file could not be written (disk full, permission denied, a read-only disk); the file
    under its final name, if any, is the previous complete one."""


class ConfigError(RelcompError):
    """A configuration value or a combination of options is invalid."""


class TrainingError(RelcompError):
    """Training cannot go on (a non-finite loss, ...)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a checkpoint; the message says how to continue."""
