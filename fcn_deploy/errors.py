"""The one exception type every fcn-deploy CLI turns into a single line and a non-zero exit."""


class FcnError(Exception):
    """A problem the user can fix (bad file, wrong shape, unknown name...).

    CLIs catch it, print ``error: <message>`` on one line and exit with status 2.
    """


def unknown_name(kind: str, name: str, valid) -> FcnError:
    """Registry error that lists the valid names (as timm and torchvision do)."""
    return FcnError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty:
    what a one-line error shows of a library's (often multi-line) exception."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
