"""`mixdeploy` command line: parses options, calls the stage functions, prints, sets the exit code.

Commands live one per module in mixdeploy/commands/ and are imported lazily, so
`mixdeploy models` does not pay for importing TensorFlow.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import tempfile

import click

from mixdeploy.errors import MixdeployError

# command name -> "module:attribute" of its click command
COMMANDS = {
    "models": "mixdeploy.commands.models:models",
    "flops": "mixdeploy.commands.models:flops",
    "export": "mixdeploy.commands.export:export",
    "inspect": "mixdeploy.commands.inspect:inspect",
    "parity": "mixdeploy.commands.parity:parity",
    "bench": "mixdeploy.commands.bench:bench",
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
        # A user mistake gets its message and an exit code, never a traceback.
        try:
            return super().invoke(ctx)
        except MixdeployError as err:
            click.secho(f"Error: {err}", fg="red", err=True)
            ctx.exit(err.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mixdeploy")
def cli():
    """Export MixNet classifiers from PyTorch to int8 TFLite, check parity, benchmark on phones."""


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


def main(argv=None):
    divert_native_stderr()
    return cli.main(args=argv, prog_name="mixdeploy")


if __name__ == "__main__":
    sys.exit(main())
