"""Logging rules that keep secrets out of log lines."""

import logging


class HideQueryArguments(logging.Filter):
    """`databases` logs every query with its arguments at DEBUG, and those include password
    hashes and salts. Keep the statement, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 2 and str(record.msg).startswith("Query:"):
            record.args = (record.args[0], "(hidden)")
        return True


def configure_logging() -> None:
    databases_logger = logging.getLogger("databases")
    if not any(isinstance(f, HideQueryArguments) for f in databases_logger.filters):
        databases_logger.addFilter(HideQueryArguments())
