"""User-facing errors: each one is a single line that says what is wrong and what to do."""


class PipelineError(Exception):
    """An error caused by the user's input (config, dataset, path), reported as one line."""


class ConfigError(PipelineError):
    """A configuration key or value is wrong."""


class DatasetError(PipelineError):
    """A dataset is missing, corrupt, or not of the expected layout."""
