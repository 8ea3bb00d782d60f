"""The one error type for anything a user can get wrong."""


class InputError(ValueError):
    """A problem the user caused and can fix: a bad image, model file or choice.

    The message is shown to the user as it is, so it says what went wrong and
    what to do next. It never contains a traceback.
    """
