"""`mixdeploy` command line: parses options, calls the stage functions, prints, sets the exit code.

Commands live one per module in mixdeploy/commands/ (their tables in mixdeploy/views/) and are
imported lazily, so `mixdeploy models` does not pay for importing TensorFlow.
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys
import tempfile
import traceback
import warnings

import click

from mixdeploy.errors import Interrupted, MixdeployError, os_error_message

# command name -> "module:attribute" of its click command
COMMANDS = {
    "models": "mixdeploy.commands.models:models",
    "flops": "mixdeploy.commands.models:flops",
    "export": "mixdeploy.commands.export:export",
    "inspect": "mixdeploy.commands.inspect:inspect",
    "parity": "mixdeploy.commands.parity:parity",
    "bench": "mixdeploy.commands.bench:bench",
    "profile": "mixdeploy.commands.profile:profile",
    "tune": "mixdeploy.commands.tune:tune",
    "report": "mixdeploy.commands.report:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        # The one place errors become messages: a user mistake, a file-system fault or an
        # interruption gets its message and an exit code, never a traceback (--debug shows it).
        try:
            return super().invoke(ctx)
        except MixdeployError as err:
            _fail(ctx, str(err), err.exit_code, err)
        except BrokenPipeError:       # `mixdeploy models --json | head`: click exits quietly
            raise
        except OSError as err:        # ENOSPC, EROFS, ENAMETOOLONG, EACCES, ENOTDIR, ... from any command
            _fail(ctx, os_error_message(err), 2, err)
        except EOFError as err:       # click would print only "Aborted!"
            _fail(ctx, f"a file ended early ({err or 'EOFError'}): it is truncated or corrupt; "
                       "download or write it again", 2, err)
        except MemoryError as err:
            _fail(ctx, "out of memory: use fewer images (--limit, --calib-count, --parity-count) or a "
                       "smaller --batch-size", 2, err)
        except KeyboardInterrupt as err:
            signum = getattr(err, "signum", signal.SIGINT)
            _fail(ctx, f"interrupted ({signal.Signals(signum).name}): stopped; what this run had started "
                       "writing was removed", 128 + signum, err)


def _fail(ctx, message: str, exit_code: int, err: BaseException) -> None:
    if _debug(ctx):
        traceback.print_exception(err, file=sys.stderr)
    # click.echo, not rich: paths and user text are printed literally, never read as markup
    click.secho(f"Error: {message}", fg="red", err=True)
    ctx.exit(exit_code)


def _debug(ctx) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("MIXDEPLOY_DEBUG") == "1"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mixdeploy")
@click.option("--debug", is_flag=True, help="Show the traceback behind an error message (or MIXDEPLOY_DEBUG=1).")
def cli(debug):
    """Export MixNet classifiers from PyTorch to int8 TFLite, check parity, benchmark on phones."""


_received: list[int] = []   # the signal that ended this run, if one did


def raise_on_termination() -> None:
    """SIGTERM (timeout, CI cancel, docker stop) and SIGHUP (a closed terminal) stop a run the
    way Ctrl-C does: an exception that every `finally` cleans up after. A second signal while
    cleaning up is ignored, so the cleanup finishes."""
    def handler(signum, frame):
        if _received:
            return
        _received.append(signum)
        raise Interrupted(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def divert_native_stderr() -> None:
    """Send what C++ libraries print (TensorFlow's converter and oneDNN banners, XNNPACK notes)
    to a log file, so the terminal shows our progress and results only. Python's own stderr
    (rich progress, warnings, errors) keeps the terminal. The log is kept only if the process
    dies before exiting normally (a native crash), with its path named on the first line.
    MIXDEPLOY_NATIVE_LOGS=1 keeps everything on the terminal."""
    if os.environ.get("MIXDEPLOY_NATIVE_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    log = tempfile.NamedTemporaryFile(prefix="mixdeploy-native-", suffix=".log", delete=False)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    sys.stderr.flush()
    os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    atexit.register(os.unlink, log.name)


def warnings_as_lines() -> None:
    """Python warnings (a cache that cannot be written, calibration on sample photos) as one
    `warning:` line each, like the commands' own, not as a source location and code line."""
    def show(message, category, filename, lineno, file=None, line=None):
        click.secho(f"warning: {message}", fg="yellow", err=True)

    warnings.showwarning = show


def threads_that_yield() -> None:
    """OpenMP threads (PyTorch's) sleep when they wait instead of spinning: on a machine whose cores
    are busy with other work, spinning threads hold cores while the thread they wait for cannot
    run. Measured on a loaded 2-core machine, the PyTorch parity reference at 2 threads took 2.8-10x
    as long as at 1 thread with spinning, 1.0-1.1x with OMP_WAIT_POLICY=PASSIVE (on an idle 2-core
    VM sleeping threads cost 2.6x instead, so the reference itself runs one thread on such machines:
    runtimes.default_torch_threads). Read when torch loads, so set before any command imports it;
    a user's own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None):
    threads_that_yield()
    raise_on_termination()
    warnings_as_lines()
    divert_native_stderr()
    try:
        return cli.main(args=argv, prog_name="mixdeploy")
    except SystemExit as done:
        if _received and done.code not in (128 + _received[0],):
            raise SystemExit(128 + _received[0]) from None   # a signal outside a command (start-up)
        raise


if __name__ == "__main__":
    sys.exit(main())
