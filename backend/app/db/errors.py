"""What the data layer can refuse, or fail at. No HTTP here: routes decide how each is answered."""

import asyncpg


class EmailAlreadyTakenError(Exception):
    pass


class UsernameAlreadyTakenError(Exception):
    pass


class InvalidCleaningTypeError(Exception):
    """An update would leave a cleaning without a type."""


class DatabaseUnreachableError(Exception):
    """Start-up gave up on the database; the message says which one and why, in one line."""


# What the driver raises when the database is down, restarting, or out of connections: a passing
# condition that a later request may not meet (503), not a bug (500).
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, statement cancelled
    asyncpg.exceptions.TooManyConnectionsError,
)
