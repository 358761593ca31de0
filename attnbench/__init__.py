"""attnbench: measure what vision attention mechanisms cost and what they can see and learn."""
__version__ = "0.1.0"

RESULTS_SCHEMA_VERSION = 1


class UserError(Exception):
    """Bad input from the user (suite, option, device, path): printed as one line, exit code 2."""
