"""Stopping training on request: the first Ctrl-C or SIGTERM becomes a request the loop honours after the current
step (`stop_requests`), and the batches are read by a background thread (`Fetcher`) so that the main thread hears
the request at once even while the input pipeline is starved."""

import contextlib
import logging
import queue
import signal
import threading

import keras

log = logging.getLogger("mayo_lite")


class LoopCallback(keras.callbacks.Callback):
    """A Keras callback that also hears the two events of the session's loop Keras has none for: a stop request
    (Ctrl-C, SIGTERM; after the current step, before `Interrupted` is raised: a checkpoint must be saved before the
    process leaves) and a failure (a diverged loss, bad data, a lost worker; before `on_train_end` and before the
    error goes on: what a callback began writing for a run that produced nothing should not stay behind).
    Subclasses override the ones they need."""

    def on_stop_request(self, logs=None):
        """Called once, with the logs of the last step."""

    def on_train_failure(self, error):
        """Called once, with the exception that ends training."""


def loop_callbacks(callbacks):
    """The `LoopCallback`s of a `keras.callbacks.CallbackList`."""
    return [callback for callback in callbacks.callbacks if isinstance(callback, LoopCallback)]


@contextlib.contextmanager
def stop_requests():
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a request that the loop honours after the current step; the
    handlers are then restored, so a second one stops the program at once, as Mayo's countdown did."""
    requested = []
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signals reach only the main thread; elsewhere training stops as Python decides
        return
    # A signal the process was told to ignore (a background job's SIGINT, nohup) stays ignored.
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(number) is not signal.SIG_IGN}

    def request(number, frame):
        requested.append(signal.Signals(number).name)
        for other, handler in previous.items():
            signal.signal(other, handler)
        log.warning("%s: stopping after this step and saving the checkpoint (again to stop at once)",
                    signal.Signals(number).name)
    for number in previous:
        signal.signal(number, request)
    try:
        yield requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Fetcher:
    """The batches of an iterable, read ahead by a background thread, so the main thread never sits inside the
    input pipeline: Python runs signal handlers only in the main thread and only between its own instructions, so
    a main thread blocked in `next()` on a starved pipeline (a full shuffle buffer to refill on a loaded machine)
    would hear Ctrl-C or SIGTERM only when the batch arrives. Here it waits on a queue, in short slices, and
    returns as soon as a stop is requested. An error of the pipeline is raised in the main thread."""

    _END = object()

    def __init__(self, iterable, requested, ahead=2):
        self.requested = requested
        self.queue = queue.Queue(maxsize=ahead)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._fetch, args=(iterable,), daemon=True, name="mayo-lite-batches")
        self.thread.start()

    def _put(self, item):
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(self, iterable):
        try:
            for item in iterable:
                if not self._put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the main thread, which raises it
            self._put(error)
            return
        self._put(self._END)

    def __iter__(self):
        try:
            while True:
                try:
                    item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    if self.requested:
                        return
                    continue
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stopped.set()

    def close(self):
        """Stops the reading thread and waits until it has finished."""
        self.stopped.set()
        self.thread.join()
