"""The one exception type that reaches users as a single clear line."""


class FeedbackgenError(Exception):
    """A user-facing error: the message says what is wrong and what to do, on one line.

    The CLI prints it in red and exits with code 1; it never shows a traceback.
    """


def from_known_keys(cls, d: dict, what: str):
    """Build dataclass ``cls`` from ``d``; missing keys take their defaults, unknown keys are an error.

    Raises:
        FeedbackgenError: on unknown keys (naming ``what`` and the expected keys) or invalid values.
    """
    from dataclasses import fields

    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise FeedbackgenError(f"{what}: unknown keys {unknown}; expected {', '.join(names)}")
    return cls(**{k: d[k] for k in names if k in d})
