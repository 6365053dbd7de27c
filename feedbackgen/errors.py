"""The one exception type that reaches users as a single clear line."""


class FeedbackgenError(Exception):
    """A user-facing error: the message says what is wrong and what to do, on one line.

    The CLI prints it in red and exits with code 1; it never shows a traceback.
    """
