"""The `my` command: arguments, processed left to right, become config updates and action calls.

This room knows nothing about Keras: the session room is imported only when an action needs it, so `my --help`
and config errors answer at once.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback

from mayo_lite import __version__
from mayo_lite.config import Config
from mayo_lite.config.keys import shorten
from mayo_lite.errors import Interrupted, UserError, caused_by_interrupt, did_you_mean
from mayo_lite.session.actions import ACTIONS
from mayo_lite.session.actions import load as load_action
from mayo_lite.settings import check_settings

log = logging.getLogger("mayo_lite")

MAX_ERROR = 400  # characters of an error line; a value echoed in it is cut

# Action name -> help text, from the one table of actions (mayo_lite.session.actions; no TensorFlow there).
ACTION_HELP = {name: action.help for name, action in ACTIONS.items()}

USAGE = """usage: my ARG [ARG ...]

Arguments are processed left to right:
  FILE.yaml       merge a config file (looked up in the current directory, then in the bundled configs/)
  KEY.PATH=VALUE  set a key; VALUE is YAML (0.5, null, [0, 1], {a: 1}, true, abc)
  ACTION          run an action on the config as it stands

Actions:
{actions}

Example:
  my models/lenet5.yaml datasets/fashion_mnist.yaml trainers/lenet5.yaml train eval info

A config change after an action discards the session; the next action builds a fresh one and continues from
the checkpoint the previous action loaded or saved, or, if system.checkpoint.load was changed, from the one it
names: latest (default), a name or epoch of this run, a path, or another model's name (its run's latest, e.g. a
dense model's for its gated variant).
Exit status: 0 success, 2 usage or config error, 1 any other failure, 130 interrupted (Ctrl-C or SIGTERM
during train saves `latest` first; a second Ctrl-C stops at once).
Options: -h/--help this text; --version the version."""


def usage():
    width = max(map(len, ACTION_HELP))
    return USAGE.replace("{actions}", "\n".join(f"  {name.ljust(width)}  {text}" for name, text in ACTION_HELP.items()))


class Runner:
    """The config as it stands and the session built from it, discarded when the config changes."""

    def __init__(self):
        self.cfg = Config()
        self.settings = None  # the checked `system` settings of the action running (mayo_lite.settings)
        self.reads = ()  # the data splits the action running cannot do without
        self._session = None

    def session(self):
        if self._session is None or self._session.version != self.cfg.version:
            previous, self._session = self._session, None
            from mayo_lite.session.session import Session
            self._session = Session(self.cfg, self.settings, continue_from=self._continuation(previous),
                                    splits=self.reads)
        return self._session

    def _continuation(self, previous):
        """The checkpoint a rebuilt session starts from: the last one the previous session loaded or saved, unless
        `system.checkpoint.load` was changed since. That is what makes `... train _gate.density=0.5
        reset-num-epochs train` (and a switch from a dense to a gated model) continue from the weights just
        trained, whichever run directory they were saved in."""
        if previous is None or previous.checkpoint_path is None:
            return None
        if self.settings.checkpoint_load != previous.settings.checkpoint_load:
            return None
        return previous.checkpoint_path

    def discard_session(self):
        self._session = None

    def act(self, name):
        settings = check_settings(self.cfg, name)  # before anything is built, read or written
        _configure_logging(settings.log_level)
        with _native_notices_silenced(not log.isEnabledFor(logging.DEBUG)):
            from mayo_lite.session.session import prepared_settings  # TensorFlow loads only now
            action, check = load_action(name)
        self.settings = prepared_settings(self.cfg, name, settings)
        if check is not None:
            check(self.cfg, self.settings)
        self.reads = tuple(self.settings.eval_split if split == "eval" else split for split in ACTIONS[name].reads)
        log.debug("action %s", name)
        action(self)


@contextlib.contextmanager
def _native_notices_silenced(silence):
    """Silences file descriptor 2 while TensorFlow starts.

    Its C++ runtime prints start-up notices (CUDA probing, absl initialisation) straight to the descriptor,
    before TF_CPP_MIN_LOG_LEVEL takes effect; on a CPU machine they are noise around the program's own lines.
    `system.log.level=debug` keeps them.
    """
    if not silence:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _configure_logging(level):
    """`level`: the checked system.log.level (one of settings.LOG_LEVELS)."""
    log.setLevel(getattr(logging, level.upper()))
    # TensorFlow and TensorFlow Datasets log through absl; below debug only their errors concern a user.
    logging.getLogger("absl").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)


def _classify(argument):
    if argument.endswith((".yaml", ".yml")):
        return "file"
    if "=" in argument:
        return "override"
    if argument in ACTION_HELP:
        return "action"
    return None


def main(argv=None):
    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(usage())
        return 0
    if arguments[0] == "--version":
        print(f"mayo-lite {__version__}")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A fresh handler per call: it must write to the sys.stderr of this call (tests swap it between calls).
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    for argument in arguments:
        if _classify(argument) is None:
            suggestion = did_you_mean(argument, ACTION_HELP)
            hint = f"{suggestion} " if suggestion else ""
            print(f"my: error: unknown argument {argument!r}: not a .yaml file, a key=value override or an action; "
                  f"{hint}actions: {', '.join(ACTION_HELP)} (see my --help)", file=sys.stderr)
            return 2
    runner = Runner()
    try:
        for argument in arguments:
            kind = _classify(argument)
            if kind == "file":
                runner.cfg.load(argument)
            elif kind == "override":
                runner.cfg.override(argument)
            else:
                runner.act(argument)
        if any(_classify(argument) == "action" for argument in arguments):
            for origin in runner.cfg.unread_overrides():
                log.warning("%s: nothing read this key; a typo?", origin)
    except UserError as error:
        if log.isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        print(f"my: error: {shorten(str(error), MAX_ERROR)}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"my: {error}", file=sys.stderr)
        return 130
    except Terminated:
        print("my: stopped (SIGTERM)", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("my: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as error:  # noqa: BLE001 - the launcher's last line of defence: one line, exit status 1
        if caused_by_interrupt(error):
            print("my: interrupted", file=sys.stderr)
            return 130
        if log.isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        message = str(error).strip().splitlines()
        print(f"my: error: {type(error).__name__}: {shorten(message[0] if message else '', MAX_ERROR)} "
              "(system.log.level=debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (training saves first, see session.loop): stop like Ctrl-C, with one line."""


def _terminate(number, frame):
    raise Terminated()


def main_exit():
    """Entry point of the `my` command: `main`, with a reader that closed the pipe early (`my --help | head`) and
    a stop request at any moment handled quietly."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the closed pipe again when it flushes stdout at exit; point stdout at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141  # as a shell reports a command stopped by SIGPIPE
    except KeyboardInterrupt:
        print("my: interrupted", file=sys.stderr)
        status = 130
    if status == 130:
        # Stopped on request, progress saved: leave now. Tearing TensorFlow down (its input pipeline threads
        # finishing their batches) can take tens of seconds on a loaded machine, and a cluster scheduler sends
        # SIGKILL after a grace period.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
