"""Core of the paper-reproduction registry: manifests, method registry, runner, verification, tracking.

Importing this package is cheap: torch and mlflow are only imported by the commands that train or log.
"""

__version__ = "0.1.0"
