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

from milonga.lrc import catchup
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
from milonga.scheduler import (
    CallbackID,
    CallbackScheduler,
    SchedulerShutDownError,
    default_scheduler,
)
from milonga.scheduler.failures import CallbackFailureLog

LrcCallback = Callable[..., None]
"""Called with keyword arguments, any of ``status``, ``progress``, ``result`` and
``error``, and must accept ``**kwargs`` for those a later protocol may add."""

CALLING_POLL_SECONDS = 0.05
"""How often a worker waiting to call the callback checks whether updates have stopped."""
REPLY_WAIT_SECONDS = 4.0
"""How long an update that arrives before the command's reply waits for it, at least; the
proxy's timeout plus a second if that is longer."""

_FAILURE_KEY = "lrc_callback"
"""The one key of each subscription's `CallbackFailureLog`."""

_logger = logging.getLogger("milonga.lrc")


def check_lrc_callback(lrc_callback: LrcCallback) -> None:
    """Raise `LrcCallbackError` unless ``lrc_callback`` accepts arbitrary keyword arguments."""
    if not callable(lrc_callback):
        raise LrcCallbackError(
            f"lrc_callback must be a callable taking **kwargs, got "
            f"{type(lrc_callback).__name__}; pass a function such as def on_update(**kwargs)"
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
    """The updates of one invoked command, passed to its ``lrc_callback``; `invoke_lrc`
    makes one.

    Updates stop after a terminal status (COMPLETED, FAILED, ABORTED, REJECTED,
    NOT_FOUND) or `unsubscribe_lrc_events`.  The callback runs on the scheduler's workers,
    or for an end learnt from the device's records on milonga's catch-up thread, one
    call at a time.
    """

    def __init__(
        self,
        lrc_callback: LrcCallback,
        proxy: tango.DeviceProxy,
        command: str,
        arguments: tuple[Any, ...],
        *,
        scheduler: CallbackScheduler,
        version: int,
        logger: logging.Logger,
        catch_up: bool = True,
    ) -> None:
        """Register on the device's LRC streams, then call ``command``; raise as
        `invoke_lrc` documents, with nothing left registered.  With ``catch_up``, ask the
        device how the command ended if none of its updates arrived (see `catchup`)."""
        self._callback = lrc_callback
        self._scheduler = scheduler
        self._version = version
        self._command = command
        self._logger = logger
        self._failures = CallbackFailureLog(
            logger, describe="lrc_callback of %s (%s)", carry_on="later updates are still passed on"
        )
        self._reply_wait = max(REPLY_WAIT_SECONDS, proxy.get_timeout_millis() / 1000 + 1)
        self._state = threading.Lock()  # guards _registrations; never held while calling out
        self._calling = threading.Lock()  # held while the callback runs: one call at a time
        self._registrations: list[futures.Future[CallbackID]] = []
        self._finished = threading.Event()
        self._heard = False  # an update about the command reached _on_event
        self._outage = False  # an error event came, and no update since
        self._last: dict[str, Any] = {}  # what the callback was last told, by keyword
        self._proxy = proxy
        self._command_id = ""
        self._sent = threading.Event()  # the command is called: events may be about it
        self._replied = threading.Event()  # the command id is known, or it never will be
        self._subscription_error = ""  # the last error event before the command was called
        self._subscribe(proxy)
        self._sent.set()
        try:
            self._command_id = self._call_command(proxy, arguments)
        except BaseException:
            self.unsubscribe_lrc_events()
            raise
        self._replied.set()
        if catch_up:
            catchup.call_later(catchup.CATCH_UP_SECONDS, self._catch_up)

    @property
    def command_id(self) -> str:
        """The id the device gave the command."""
        return self._command_id

    @property
    def protocol_version(self) -> int:
        """The long-running-command protocol version spoken with the device."""
        return self._version

    @property
    def finished(self) -> bool:
        """Whether updates have stopped: a terminal status arrived (its call may still be
        running), `unsubscribe_lrc_events` was called, or the scheduler was shut down."""
        return self._finished.is_set() or self._scheduler.is_shut_down

    def unsubscribe_lrc_events(self) -> None:
        """Stop the updates: unregister the callbacks from the scheduler.  Idempotent.

        Returns without waiting for a call of the callback already under way, so anything
        may call it, the callback included; at most that call happens after it returns.
        Streams stay subscribed while something else uses them, such as a connected LRC
        interface.
        """
        with self._state:
            self._finished.set()
            self._replied.set()
            registrations, self._registrations = self._registrations, []
        for registration in registrations:
            if registration.cancel():
                continue
            # CancelledError: the scheduler's shutdown cancelled a pending registration
            with contextlib.suppress(KeyError, futures.CancelledError):
                self._scheduler.unregister_callback(registration.result())
        self._sum_up_failures()  # unless a call is under way: its thread sums up as it ends

    # -- the invocation, in the constructor --------------------------------------------

    def _subscribe(self, proxy: tango.DeviceProxy) -> None:
        """Register with the scheduler; return once every stream is connected."""
        attributes = attributes_of(self._version)
        factories = queue_factories(self._scheduler, proxy, self._version)
        not_called = f"so {self._command} was not called"
        try:
            for attr, factory in zip(attributes, factories, strict=True):
                registration = self._scheduler.register_event_callback(
                    proxy, attr, CHANGE, self._on_event, queue_factory=factory
                )
                with self._state:
                    self._registrations.append(registration)
            futures.wait(self._registrations, timeout=CONNECT_TIMEOUT_SECONDS)
            for registration in self._registrations:
                registration.result(timeout=0)
        except futures.TimeoutError as timeout:
            self.unsubscribe_lrc_events()
            last_error = self._subscription_error and f" (last error: {self._subscription_error})"
            raise LrcInvocationError(
                f"could not subscribe to {', '.join(attributes)} of {proxy.dev_name()} "
                f"within {CONNECT_TIMEOUT_SECONDS:g} s{last_error}, {not_called}; check "
                "that the device server runs and pushes change events on them"
            ) from timeout
        except (futures.CancelledError, SchedulerShutDownError) as shut_down:
            self.unsubscribe_lrc_events()
            raise LrcInvocationError(
                f"the scheduler {self._scheduler.name} is shut down, {not_called}; invoke "
                "it with a scheduler that is running"
            ) from shut_down
        except BaseException:
            self.unsubscribe_lrc_events()
            raise

    def _call_command(self, proxy: tango.DeviceProxy, arguments: tuple[Any, ...]) -> str:
        """Call the command; its command id, or the error its reply calls for."""
        command, device = self._command, proxy.dev_name()
        try:
            code, text = parse_reply(proxy.command_inout(command, *arguments), command)
        except tango.DevFailed as failure:
            raise LrcInvocationError(
                f"calling {command} on {device} failed: "
                f"{failure.args[0].desc.strip() if failure.args else failure}; check the "
                "command name, its argument and that the device server is running"
            ) from failure
        except MalformedUpdateError as malformed:
            raise UnexpectedResultCodeError(str(malformed)) from malformed
        except Exception as refused:  # PyTango could not convert the argument, for one
            raise LrcInvocationError(
                f"PyTango could not call {command} on {device} with {arguments!r}: "
                f"{type(refused).__name__}: {refused}; pass an argument of the command's "
                "type (strings: Latin-1 characters only)"
            ) from refused
        if code in ACCEPTED_CODES:
            return text
        if code is ResultCode.REJECTED:
            self._logger.warning("%s on %s was rejected: %s", command, device, text)
            raise CommandRejectedError(
                f"{device} rejected {command}: {text}; the command did not run, so retry "
                "once the device accepts it",
                reason=text,
            )
        raise UnexpectedResultCodeError(
            f"{command} on {device} replied {code.name} ({text!r}), where a long running "
            "command replies QUEUED or STARTED: check that it is a long running command"
        )

    # -- on the scheduler's workers ----------------------------------------------------

    def _on_event(self, event: tango.EventData) -> None:
        if not self._sent.is_set():
            self._note_subscription_error(event)
            return
        # An update can beat the command's reply; its worker waits for the reply, which
        # is due at once since the device already acted.
        if not self._replied.wait(self._reply_wait):
            self._logger.warning(
                "%s was called but did not reply within %g s; an update that came first is dropped",
                self._command,
                self._reply_wait,
            )
            return
        if not self._hold_calling():
            return
        try:
            if self._finished.is_set():
                return
            self._note_outage(event)
            update = self._news(self._decode(event))
            if update is None:
                return  # about another command, or nothing new
            self._heard = True
            if update.get("status") in TERMINAL_STATUSES:
                self.unsubscribe_lrc_events()  # before the call: `finished` holds in it
            self._call(**update)
        finally:
            self._done_calling()

    def _note_subscription_error(self, event: tango.EventData) -> None:
        """Keep what an event that came before the command was called says, for the error
        `invoke_lrc` raises if the streams do not connect; it cannot be about the command,
        so the callback never sees it."""
        if event.err and event.errors:
            error = event.errors[0]
            self._subscription_error = f"{error.reason}: {error.desc.strip()}"
        self._logger.debug(
            "%s is not called yet: an event of %s is not about it", self._command, event.attr_name
        )

    def _hold_calling(self) -> bool:
        """Take `_calling` for a worker, or return False once updates have stopped.

        The catch-up thread may hold it for a call that shuts the scheduler down, which
        waits for this worker; it marks the subscription finished before that call.
        """
        while not self._calling.acquire(timeout=CALLING_POLL_SECONDS):
            if self._finished.is_set():
                return False
        return True

    def _note_outage(self, event: tango.EventData) -> None:
        """Track error events; once events flow again after some, ask the device how the
        command is doing, since updates pushed meanwhile are lost (a server restart)."""
        if event.err:
            self._outage = True
        elif self._outage:
            self._outage = False
            catchup.call_later(0.0, self._recheck_after_outage)

    def _news(self, update: dict[str, Any] | None) -> dict[str, Any] | None:
        """``update`` without what the callback was told already, or None if nothing is
        left.  A v1 device republishes its whole status and progress lists whenever one
        command changes, which would repeat the others' updates; and after a server
        restart Tango sends each attribute's latest value again."""
        if update is None or "error" in update:
            return update
        news = {key: value for key, value in update.items() if self._last.get(key) != value}
        self._last.update(news)
        return news or None

    # -- on the catch-up thread ----------------------------------------------------------

    def _recheck_after_outage(self) -> None:
        """Report how the command ended, or that the device no longer knows it, from the
        device's records, after its events stopped for a while."""
        self._end_from_records(
            catchup.ask_device_after_outage,
            unless_heard=False,
            cannot_ask_level=logging.WARNING,
            why="its updates stopped for a while (a server restart, say); updates pushed "
            "meanwhile were lost",
        )

    def _catch_up(self) -> None:
        """Report how the command ended from the device's records, if it has ended and
        none of its updates arrived."""
        self._end_from_records(
            catchup.ask_device,
            unless_heard=True,
            cannot_ask_level=logging.DEBUG,
            why=f"none of its updates arrived within {catchup.CATCH_UP_SECONDS:g} s: lost in "
            "the first milliseconds of a new subscription, or still queued behind slow "
            "callbacks",
        )

    def _end_from_records(
        self,
        ask: Callable[[tango.DeviceProxy, int, str], dict[str, Any] | None],
        *,
        unless_heard: bool,
        cannot_ask_level: int,
        why: str,
    ) -> None:
        """If ``ask`` finds in the device's records an update that ends the command, make
        it the callback's last call, logging ``why``; not once updates have stopped, nor,
        with ``unless_heard``, once one of them arrived."""

        def wanted() -> bool:
            return not (self.finished or (unless_heard and self._heard))

        if not wanted():
            return
        try:
            update = ask(self._proxy, self._version, self._command_id)
        except tango.DevFailed as failure:
            self._logger.log(
                cannot_ask_level,
                "cannot read how %s (%s) is doing from the device: %s",
                self._command,
                self._command_id,
                failure,
            )
            return
        if update is None:
            return  # still queued or running: its updates say the rest
        self._calling.acquire()
        try:
            if not wanted():
                return
            self._logger.warning(
                "%s (%s) is %s by the device's records: %s",
                self._command,
                self._command_id,
                update["status"].name,
                why,
            )
            self.unsubscribe_lrc_events()
            self._call(**update)
        finally:
            self._done_calling()

    def _decode(self, event: tango.EventData) -> dict[str, Any] | None:
        """The keyword arguments ``event`` holds for the callback, or None."""
        if event.err:
            errors = tuple(event.errors)
            self._logger.warning(
                "error event for %s (%s): %s", self._command, self._command_id, errors
            )
            return {"error": errors}
        value: Sequence[str] | None = None if event.attr_value is None else event.attr_value.value
        try:
            if self._version >= 2:
                return decode_v2(value, self._command_id)
            return decode_v1(event.attr_name.rsplit("/", 1)[-1], value, self._command_id)
        except MalformedUpdateError as malformed:
            self._logger.error("%s (%s): %s", self._command, self._command_id, malformed)
            return {"error": (_dev_error("LRC_MalformedUpdate", str(malformed)),)}

    def _call(self, **kwargs: Any) -> None:
        """Call the callback with ``kwargs``, holding `_calling`.  What it raises is logged
        through the rate limiter the scheduler's callbacks use."""
        try:
            self._callback(**kwargs)
        except BaseException:  # even SystemExit must not end a worker or the catch-up thread
            self._failures.report(_FAILURE_KEY, self._command, self._command_id)

    def _done_calling(self) -> None:
        """Release `_calling`, then `_sum_up_failures`."""
        self._calling.release()
        self._sum_up_failures()

    def _sum_up_failures(self) -> None:
        """Once updates have stopped, log how many of the callback's failures were left
        out, if any, unless a call is under way (its thread does it as that call ends).

        Whoever stops the updates and whoever ends the last call both come here after
        their step, so one of them always finds the other done; summing up twice logs
        nothing the second time.
        """
        if self.finished and self._calling.acquire(blocking=False):
            try:
                self._failures.forget(_FAILURE_KEY)
            finally:
                self._calling.release()


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
    `LrcInvocationError` if the device cannot be reached or the scheduler is shut down.
    """
    check_lrc_callback(lrc_callback)
    arguments = _arguments(command_args)
    scheduler = default_scheduler() if callback_scheduler is None else callback_scheduler
    connected = connected_version(scheduler, proxy)
    return LrcSubscription(
        lrc_callback,
        proxy,
        command,
        arguments,
        scheduler=scheduler,
        version=connected or protocol_version(proxy),
        logger=logger or _logger,
        catch_up=connected is None,  # a connected interface's streams are long established
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
