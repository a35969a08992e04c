"""What the data layer can refuse. No HTTP here: routes decide how each one is answered."""


class EmailAlreadyTakenError(Exception):
    pass


class UsernameAlreadyTakenError(Exception):
    pass


class InvalidCleaningTypeError(Exception):
    """An update would leave a cleaning without a type."""
