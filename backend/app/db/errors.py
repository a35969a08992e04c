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


class CleaningHasAcceptedOfferError(Exception):
    """The cleaning has an accepted (or completed) offer: the work is agreed, or done."""


class OfferAlreadyExistsError(Exception):
    """The user already has an offer on this cleaning."""


class OfferNotFoundError(Exception):
    """No such offer (any longer)."""


class OfferNotPendingError(Exception):
    """Only a pending offer can be accepted or rescinded."""


class OfferNotAcceptedError(Exception):
    """Only an accepted offer can be cancelled, or its cleaner evaluated."""


class CleaningNotFoundError(Exception):
    """The cleaning is gone (deleted while the request was on its way)."""


class CleaningAlreadyHasAcceptedOfferError(Exception):
    """Another offer of the cleaning was accepted first."""


class CleaningOwnerLeftError(Exception):
    """The cleaning's owner has deleted their account: nobody can accept an offer on it."""


class AccountNotActiveError(Exception):
    """The account was deactivated or deleted while the request was on its way (after its password
    was checked): it gets no session."""


class SearchQueryWithoutWordsError(Exception):
    """A search's text has no word to look for: only stop words ("the"), punctuation or blanks."""


class SearchQueryOnlyExcludesError(Exception):
    """A search's text only excludes words ("-oven"): it would match nearly every cleaning."""
