"""Client side: `invoke_lrc` calls a long running command and reports its updates to a
callback, through a `CallbackScheduler`."""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import tango

from milonga.lrc.errors import (
    CommandRejectedError,
    LrcCallbackError,
    LrcInvocationError,
    UnexpectedResultCodeError,
)
from milonga.lrc.interface import (
    CHANGE,
    CONNECT_TIMEOUT_SECONDS,
    connected_version,
    protocol_version,
    queue_factories,
)
from milonga.lrc.protocol import (
    ACCEPTED_CODES,
    TERMINAL_STATUSES,
    MalformedUpdateError,
    ResultCode,
    attributes_of,
    decode_v1,
    decode_v2,
    parse_reply,
)
from milonga.scheduler import CallbackID, CallbackScheduler, default_scheduler

LrcCallback = Callable[..., None]
"""Called with keyword arguments, any of ``status``, ``progress``, ``result`` and
``error``, and must accept ``**kwargs`` for those a later protocol may add."""

REPLY_WAIT_SECONDS = 4.0
"""How long an update that arrives before the command's reply waits for it, at least; the
proxy's timeout plus a second if that is longer."""

_logger = logging.getLogger("milonga.lrc")


def check_lrc_callback(lrc_callback: LrcCallback) -> None:
    """Raise `LrcCallbackError` unless ``lrc_callback`` accepts arbitrary keyword arguments."""
    if not callable(lrc_callback):
        raise LrcCallbackError(
            f"lrc_callback must be a callable, got {type(lrc_callback).__name__}"
        )
    try:
        parameters = inspect.signature(lrc_callback).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise LrcCallbackError(
            f"lrc_callback {getattr(lrc_callback, '__qualname__', lrc_callback)!r} does not "
            "accept **kwargs; it is called with any of status=, progress=, result= and "
            "error=, and later protocols may add more: add a **kwargs parameter"
        )


class LrcSubscription:
    """The updates of one invoked command, passed to its ``lrc_callback``.

    Updates stop after a terminal status (COMPLETED, FAILED, ABORTED, REJECTED,
    NOT_FOUND) or `unsubscribe_lrc_events`.  The callback runs on the scheduler's workers,
    one call at a time.
    """

    def __init__(
        self,
        lrc_callback: LrcCallback,
        scheduler: CallbackScheduler,
        version: int,
        command: str,
        logger: logging.Logger,
    ) -> None:
        self._callback = lrc_callback
        self._scheduler = scheduler
        self._version = version
        self._command = command
        self._logger = logger
        self._lock = threading.RLock()
        self._command_id: str | None = None
        self._replied = threading.Event()  # the command id is known, or it never will be
        self._reply_wait = REPLY_WAIT_SECONDS
        self._registrations: list[futures.Future[CallbackID]] = []
        self._finished = threading.Event()

    @property
    def command_id(self) -> str:
        """The id the device gave the command."""
        return self._command_id or ""

    @property
    def protocol_version(self) -> int:
        """The long-running-command protocol version spoken with the device."""
        return self._version

    @property
    def finished(self) -> bool:
        """Whether updates have stopped: terminal status seen, or unsubscribed."""
        return self._finished.is_set()

    def unsubscribe_lrc_events(self) -> None:
        """Stop the updates: unregister the callbacks from the scheduler.  Idempotent.

        Streams stay subscribed while something else uses them, such as a connected
        LRC interface.
        """
        with self._lock:
            self._finished.set()
            self._replied.set()
            registrations, self._registrations = self._registrations, []
        for registration in registrations:
            if registration.cancel():
                continue
            # KeyError, CancelledError: the scheduler's shutdown unregistered everything
            with contextlib.suppress(KeyError, futures.CancelledError):
                self._scheduler.unregister_callback(registration.result())

    # -- used by invoke_lrc ------------------------------------------------------------

    def _subscribe(self, proxy: tango.DeviceProxy) -> None:
        """Register with the scheduler; return once every stream is connected."""
        attributes = attributes_of(self._version)
        factories = queue_factories(self._scheduler, proxy, self._version)
        try:
            for attr, factory in zip(attributes, factories, strict=True):
                self._registrations.append(
                    self._scheduler.register_event_callback(
                        proxy, attr, CHANGE, self._on_event, queue_factory=factory
                    )
                )
            for registration in list(self._registrations):
                registration.result(timeout=CONNECT_TIMEOUT_SECONDS)
        except futures.TimeoutError as timeout:
            self.unsubscribe_lrc_events()
            raise LrcInvocationError(
                f"could not subscribe to {', '.join(attributes)} of {proxy.dev_name()} "
                f"within {CONNECT_TIMEOUT_SECONDS:g} s, so {self._command} was not called; "
                "check that the device pushes change events on them"
            ) from timeout
        except futures.CancelledError as cancelled:
            self.unsubscribe_lrc_events()
            raise LrcInvocationError(
                f"the scheduler {self._scheduler.name} was shut down while subscribing, so "
                f"{self._command} was not called; invoke it with a running scheduler"
            ) from cancelled
        except BaseException:
            self.unsubscribe_lrc_events()
            raise

    def _start(self, command_id: str) -> None:
        """The command replied with ``command_id``: updates can be matched from now on."""
        self._command_id = command_id
        self._replied.set()

    # -- on the scheduler's workers ----------------------------------------------------

    def _on_event(self, event: tango.EventData) -> None:
        # An update can beat the command's reply; its worker waits for the reply, which
        # is due at once since the device already acted.
        if not self._replied.wait(self._reply_wait):
            self._logger.warning(
                "%s did not reply within %g s; an update that came first is dropped",
                self._command,
                self._reply_wait,
            )
            return
        with self._lock:
            if not self.finished:
                self._handle(event)

    def _handle(self, event: tango.EventData) -> None:
        """Pass on what ``event`` says about this command, if anything.  Holds the lock."""
        if event.err:
            errors = tuple(event.errors)
            self._logger.warning(
                "error event for %s (%s): %s", self._command, self.command_id, errors
            )
            self._call(error=errors)
            return
        value: Sequence[str] | None = None if event.attr_value is None else event.attr_value.value
        try:
            if self._version >= 2:
                update = decode_v2(value, self.command_id)
            else:
                update = decode_v1(event.attr_name.rsplit("/", 1)[-1], value, self.command_id)
        except MalformedUpdateError as malformed:
            self._logger.error("%s (%s): %s", self._command, self.command_id, malformed)
            self._call(error=(_dev_error("LRC_MalformedUpdate", str(malformed)),))
            return
        if update is None:
            return  # about another command
        self._call(**update)
        if update.get("status") in TERMINAL_STATUSES:
            self.unsubscribe_lrc_events()

    def _call(self, **kwargs: Any) -> None:
        try:
            self._callback(**kwargs)
        except Exception:
            self._logger.exception(
                "lrc_callback of %s (%s) raised on %s; later updates are still passed on",
                self._command,
                self.command_id,
                sorted(kwargs),
            )


def invoke_lrc(
    lrc_callback: LrcCallback,
    proxy: tango.DeviceProxy,
    command: str,
    command_args: tuple[Any, ...] | None = None,
    *,
    callback_scheduler: CallbackScheduler | None = None,
    logger: logging.Logger | None = None,
) -> LrcSubscription:
    """Call the long running command ``command`` and pass its updates to ``lrc_callback``.

    Subscribes to the device's LRC attributes first (nothing to do on a connected
    interface), then calls ``proxy.command_inout(command, *command_args)``.  The callback
    runs on ``callback_scheduler``'s workers (the default scheduler if None).  Raises
    `CommandRejectedError` or `UnexpectedResultCodeError` on such a reply, and
    `LrcInvocationError` if the device cannot be reached.
    """
    check_lrc_callback(lrc_callback)
    arguments = _arguments(command_args)
    scheduler = default_scheduler() if callback_scheduler is None else callback_scheduler
    logger = logger or _logger
    version = connected_version(scheduler, proxy) or protocol_version(proxy)
    subscription = LrcSubscription(lrc_callback, scheduler, version, command, logger)
    subscription._reply_wait = max(REPLY_WAIT_SECONDS, proxy.get_timeout_millis() / 1000 + 1)
    subscription._subscribe(proxy)
    try:
        code, text = parse_reply(proxy.command_inout(command, *arguments), command)
    except tango.DevFailed as failure:
        subscription.unsubscribe_lrc_events()
        raise LrcInvocationError(
            f"calling {command} on {proxy.dev_name()} failed: "
            f"{failure.args[0].desc.strip() if failure.args else failure}; check the command "
            "name, its argument and that the device server is running"
        ) from failure
    except MalformedUpdateError as malformed:
        subscription.unsubscribe_lrc_events()
        raise UnexpectedResultCodeError(str(malformed)) from malformed
    except BaseException:
        subscription.unsubscribe_lrc_events()
        raise
    if code in ACCEPTED_CODES:
        subscription._start(text)
        return subscription
    subscription.unsubscribe_lrc_events()
    if code is ResultCode.REJECTED:
        logger.warning("%s on %s was rejected: %s", command, proxy.dev_name(), text)
        raise CommandRejectedError(f"{proxy.dev_name()} rejected {command}: {text}", reason=text)
    raise UnexpectedResultCodeError(
        f"{command} on {proxy.dev_name()} replied {code.name} ({text!r}); a long running "
        "command replies QUEUED or STARTED: is it a long running command?"
    )


def _arguments(command_args: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if command_args is None:
        return ()
    if not isinstance(command_args, tuple | list) or len(command_args) > 1:
        raise TypeError(
            f"command_args must be None or a tuple holding the command's one argument, "
            f"such as (42.0,); got {command_args!r}"
        )
    return tuple(command_args)


def _dev_error(reason: str, description: str) -> tango.DevError:
    error = tango.DevError()
    error.reason = reason
    error.desc = description
    error.origin = "milonga.lrc"
    error.severity = tango.ErrSeverity.ERR
    return error
