"""The errors `invoke_lrc` and the LRC interface functions raise."""

from __future__ import annotations


class LrcError(Exception):
    """A long running command could not be invoked as asked."""


class CommandRejectedError(LrcError):
    """The device rejected the command (`ResultCode.REJECTED`); ``reason`` says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnexpectedResultCodeError(LrcError):
    """The device replied with a result code other than QUEUED, STARTED or REJECTED."""


class LrcInvocationError(LrcError):
    """The device could not be reached, subscribed to or commanded; see ``__cause__``."""


class MissingLrcInterfaceError(LrcInvocationError):
    """The device has none of the attributes of the LRC protocol: it runs no long running
    commands, or it is not the device meant."""


class LrcCallbackError(TypeError):
    """The ``lrc_callback`` cannot take the keyword arguments it may be given."""
