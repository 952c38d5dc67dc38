"""The one exception type users see: a message that names the file, key or value and the fix."""


class ClasflowError(Exception):
    """A user-facing error; the CLI prints its message without a traceback and exits 2."""


class ConfigError(ClasflowError):
    """A configuration file or override is invalid."""


class DownloadError(ClasflowError):
    """A download failed or its content did not verify."""


class ArchiveError(ClasflowError):
    """An archive is unsafe or broken."""


class DataError(ClasflowError):
    """A dataset, list file or image is invalid."""


class StorageError(ClasflowError):
    """An artifact-store operation (MinIO/S3 or a local folder) failed; names endpoint and key, never credentials."""
