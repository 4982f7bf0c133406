"""Long running commands: the device side (`LrcDevice`, `long_running_command`) and the
client side (`invoke_lrc`, `connect_lrc_interface`) of the field's LRC protocol."""

from milonga.lrc.client import LrcCallback, LrcSubscription, check_lrc_callback, invoke_lrc
from milonga.lrc.device import LrcDevice, long_running_command
from milonga.lrc.errors import (
    CommandRejectedError,
    LrcCallbackError,
    LrcError,
    LrcInvocationError,
    MissingLrcInterfaceError,
    UnexpectedResultCodeError,
)
from milonga.lrc.executor import DEFAULT_MAX_QUEUED, CommandExecutor, ProgressReporter, TaskRecord
from milonga.lrc.interface import connect_lrc_interface, disconnect_lrc_interface, protocol_version
from milonga.lrc.protocol import ProtocolVersionError, ResultCode, TaskStatus

__all__ = [
    "DEFAULT_MAX_QUEUED",
    "CommandExecutor",
    "CommandRejectedError",
    "LrcCallback",
    "LrcCallbackError",
    "LrcDevice",
    "LrcError",
    "LrcInvocationError",
    "LrcSubscription",
    "MissingLrcInterfaceError",
    "ProgressReporter",
    "ProtocolVersionError",
    "ResultCode",
    "TaskRecord",
    "TaskStatus",
    "UnexpectedResultCodeError",
    "check_lrc_callback",
    "connect_lrc_interface",
    "disconnect_lrc_interface",
    "invoke_lrc",
    "long_running_command",
    "protocol_version",
]
