"""Failures a user can cause, as one line that names the file or the key.

    try:
        run()
    except Exception as err:
        print(f"error: {describe_error(err)}"); sys.exit(exit_code(err))

Bad params are `ConfigError`s (config.py: one line per bad key). At run time a user can point
at a missing folder or dataset, an unreadable file, an unreachable S3 endpoint, a profile or
credentials that do not exist: each maps to one line here, with the params key to change where
there is one. Anything else is a bug and says so (the command's `--debug` shows the traceback).
Every line goes through `redact_secrets`, so no credential reaches a terminal or a log.
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from spatialboost.config import ConfigError, redact_secrets

USAGE_EXIT = 2
"""Exit status of a bad params file or override (as argparse and typer use for bad arguments)."""

FAILURE_EXIT = 1
"""Exit status of a run that failed on its inputs or environment."""


def exit_code(err: BaseException) -> int:
    """2 for bad params, 130 for Ctrl-C, 1 for everything else."""
    if isinstance(err, ConfigError):
        return USAGE_EXIT
    if isinstance(err, KeyboardInterrupt):
        return 130
    return FAILURE_EXIT


def describe_error(err: BaseException) -> str:
    """One line (or one per bad key, for a ConfigError) saying what failed and where."""
    return redact_secrets(_describe(err))


def _describe(err: BaseException) -> str:
    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    if isinstance(err, MemoryError):
        return "out of memory (a smaller shard_size or batch_size needs less)"
    aws = _describe_aws(err)
    if aws is not None:
        return aws
    if isinstance(err, OSError):
        return _describe_os_error(err)
    message = _one_line(str(err))
    if isinstance(err, (ValueError, LookupError, RuntimeError)) and message:
        return message  # our own errors name their file or key
    return f"unexpected {type(err).__name__}: {message or 'no message'} (rerun with --debug for the traceback)"


def _describe_os_error(err: OSError) -> str:
    filename = getattr(err, "filename", None)
    reason = err.strerror or _one_line(str(err)) or type(err).__name__
    if filename is not None:
        second = getattr(err, "filename2", None)
        return f"{filename}: {reason}" + (f" (-> {second})" if second else "")
    return _one_line(str(err)) or reason


def _describe_aws(err: BaseException) -> str | None:
    """botocore's errors, named after the `data.s3` key to change; None if not one of them."""
    if "botocore" not in sys.modules:
        return None
    from botocore import exceptions as boto

    if isinstance(err, boto.EndpointConnectionError):
        parts = urlsplit(str(err.kwargs.get("endpoint_url", "")))
        return f"cannot reach the S3 endpoint {parts.scheme}://{parts.netloc} (data.s3.endpoint_url; is the server running?)"
    if isinstance(err, (boto.ConnectTimeoutError, boto.ReadTimeoutError)):
        return f"the S3 endpoint timed out: {_one_line(str(err))} (data.s3.endpoint_url)"
    if isinstance(err, boto.ProfileNotFound):
        return f"data.s3.profile: no AWS profile {err.kwargs.get('profile', '?')!r} in the AWS config files"
    if isinstance(err, (boto.NoCredentialsError, boto.PartialCredentialsError)):
        return ("no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
                "or name a profile in data.s3.profile")  # fmt: skip
    if isinstance(err, boto.NoRegionError):
        return "no AWS region: set data.s3.region (or AWS_DEFAULT_REGION)"
    if isinstance(err, boto.ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        operation = getattr(err, "operation_name", "the request")
        return f"S3 refused {operation}: {error.get('Code', '?')} (HTTP {status}); check data.uri and data.s3"
    if isinstance(err, boto.BotoCoreError):
        return f"S3: {_one_line(str(err))} (data.s3)"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
