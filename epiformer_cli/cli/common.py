"""What every subcommand shares: option types with environment defaults, logging, error reporting,
progress bars. Nothing here knows any science; commands call one core function each.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Callable, Iterator, List, Optional, Sequence, Tuple

import typer

from epiformer_cli.errors import EpiformerError
from epiformer_cli.progress import Progress

log = logging.getLogger("epiformer_cli")


class _State:
    verbose: bool = False
    quiet: bool = False


STATE = _State()

# -- options shared by several commands (CLI value > environment variable > default) --------------
# readable=False (here and on every input path option): the core checks readability itself and says so in one line (exit 1); Typer's own
# check would print a usage block and exit 2 for what is a problem with a file, not with the option.
def required_unless(*alternatives: str) -> str:
    """How every help text says an option is needed unless something else is given, in the same
    words everywhere: ``Required unless EPIFORMER_FASTA is set.`` (Options Click itself requires
    show ``[required]``.)"""
    return "Required unless " + (", ".join(alternatives[:-1]) + " or " if len(alternatives) > 1 else "") \
        + alternatives[-1] + "."


#: what --force means in every command: it replaces what the command wrote, never what it reads;
#: each command's help adds what else it discards
FORCE_HELP = "Replace existing outputs (never an input)"

FastaOption = Annotated[
    Optional[Path],
    typer.Option("--fasta", envvar="EPIFORMER_FASTA",
                 help="Genome FASTA, plain or bgzipped (not plain gzip, which cannot be indexed). "
                      + required_unless("EPIFORMER_FASTA is set"),
                 show_envvar=False, readable=False),
]
#: ``--cons`` of a command that runs no model (prepare): only the environment or --no-cons stand in
ConsOption = Annotated[
    Optional[Path],
    typer.Option("--cons", envvar="EPIFORMER_CONS",
                 help="Conservation (phastCons) bigWig. " + required_unless("EPIFORMER_CONS is set",
                                                                           "--no-cons is given"),
                 show_envvar=False, readable=False),
]
#: ``--cons`` of a command that runs a model: a model trained without conservation needs none
ModelConsOption = Annotated[
    Optional[Path],
    typer.Option("--cons", envvar="EPIFORMER_CONS",
                 help="Conservation (phastCons) bigWig. " + required_unless(
                     "EPIFORMER_CONS is set", "--no-cons is given", "the model was trained without conservation"),
                 show_envvar=False, readable=False),
]
ModelOption = Annotated[
    Optional[Path],
    typer.Option("--model", envvar="EPIFORMER_MODEL",
                 help="Model file from `epiformer train` or `epiformer import-model`. "
                      + required_unless("EPIFORMER_MODEL is set"),
                 show_envvar=False, readable=False),
]
DeviceOption = Annotated[
    str,
    typer.Option("--device", envvar="EPIFORMER_DEVICE",
                 help="auto|cpu|cuda|cuda:N|mps; auto picks a GPU when present. [env: EPIFORMER_DEVICE]",
                 show_envvar=False),
]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help="fp32|bf16|fp16 (bf16 autocast also runs on CPUs).")
]
#: --threads of every command that computes; EPIFORMER_THREADS is read by the core
#: (epiformer_cli.threads.thread_count), so a bad value there is refused naming the variable
ThreadsOption = Annotated[
    Optional[int],
    typer.Option("--threads", metavar="N",
                 help="CPU threads to compute with [default: the CPUs this process may use: its affinity, "
                      "limited by its cgroup CPU quota; shared among torchrun's processes on a node]. "
                      "[env: EPIFORMER_THREADS]"),
]


def apply_threads(threads: Optional[int], torch: bool = True, arrow: bool = False) -> int:
    """A command's first step: compute with ``--threads`` (else EPIFORMER_THREADS, else the usable
    CPUs) threads, in torch and/or pyarrow (a command that never runs a model does not import torch
    for this). Not part of any result's identity: the threads change the speed, not the values.

    Raises:
        UsageError: a thread count below 1 or not a number, naming where it came from.
    """
    from epiformer_cli.threads import thread_count, use_arrow_threads, use_threads

    n = thread_count(threads)
    if torch:
        use_threads(n)
    if arrow:
        use_arrow_threads(n)
    return n


# -- lists of names (--tracks, --chroms): one syntax, one parser, one wording in every command ----
def names_syntax(option: str) -> str:
    """The words every list-of-names option's help uses for its syntax."""
    return f"comma-separated or repeated ({option} a,b is {option} a {option} b)"


def split_names(values: Optional[Sequence[str] | str], option: str = "--tracks") -> Optional[List[str]]:
    """What a list option was given, as :func:`epiformer_cli.options.split_names` parses it, order
    and repeats kept (the core drops repeats where they do not matter; import-model reports them)."""
    from epiformer_cli.options import split_names as parse

    names = parse(values, option, unique=False)
    return list(names) if names else None


def names_callback(ctx, param, value) -> Optional[List[str]]:
    """Click callback of a list-of-names option: :func:`split_names`, its refusal a usage error
    (exit 2) reported as Click reports a bad value."""
    from epiformer_cli.errors import UsageError

    option = next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])
    try:
        return split_names(value, option)
    except UsageError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None


#: --tracks of every command that chooses among a model's (or a store's) tracks
TRACKS_HELP = f"Only these tracks, {names_syntax('--tracks')} [default: all]."
TracksOption = Annotated[
    Optional[List[str]],
    typer.Option("--tracks", metavar="<names>", callback=names_callback, help=TRACKS_HELP),
]
#: --chroms of every command that chooses among a genome's chromosomes (aliases such as 1/chr1 resolved)
CHROMS_HELP = f"Only these chromosomes, {names_syntax('--chroms')} [default: all of the FASTA's]."
ChromsOption = Annotated[
    Optional[List[str]],
    typer.Option("--chroms", metavar="<names>", callback=names_callback, help=CHROMS_HELP),
]


def configure_logging(verbose: bool, quiet: bool) -> None:
    """Log to stderr: INFO by default, DEBUG with -v, warnings only with -q.

    Libraries speak through us too: a Python warning (torch's UserWarnings, numpy's
    RuntimeWarnings, matplotlib's) and a warning another library logs (matplotlib's font-cache
    notice) become one ``epiformer:`` debug line, shown only with -v, instead of raw text.
    Whatever users must see, epiformer says itself with ``log.warning``.
    """
    STATE.verbose, STATE.quiet = verbose, quiet
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("epiformer_cli")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Python's own root logger: without a handler, other libraries' warnings would reach stderr
    # raw through logging's last-resort handler.
    python_root = logging.getLogger()
    for handler in list(python_root.handlers):
        if isinstance(handler, _LibraryHandler):
            python_root.removeHandler(handler)
    python_root.addHandler(_LibraryHandler())
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` replacement: a library's warning as one debug line."""
    log.debug("%s (%s:%s): %s", category.__name__, filename, lineno, message)


class _LibraryHandler(logging.Handler):
    """On Python's root logger: another library's log record (warnings and above, the root's
    level) becomes one debug line of ours. epiformer's own records are handled by its handler."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "epiformer_cli" or record.name.startswith("epiformer_cli."):
            return
        try:
            log.debug("%s %s: %s", record.name, record.levelname.lower(), record.getMessage())
        except Exception:  # a library's malformed record must not stop the command
            self.handleError(record)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


#: terminal escape sequences (torch's messages embed bold text)
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Formatter(logging.Formatter):
    """``epiformer: message`` (``epiformer: warning: message`` at WARNING and above), always one
    line: a library's multi-line text is joined and its terminal escapes dropped."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "epiformer: " if record.levelno < logging.WARNING else f"epiformer: {record.levelname.lower()}: "
        message = _ESCAPES.sub("", record.getMessage())
        if "\n" in message:
            message = " ".join(part.strip() for part in message.splitlines() if part.strip())
        return prefix + message


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), raised like Ctrl-C so every clean-up path that
    handles an interruption (temporary files, partial stores) runs the same way; exit code 143."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """Make SIGTERM stop the command cleanly (exit 143) instead of killing it mid-write, and
    ignore SIGXFSZ, so a file-size limit (``ulimit -f``) is a write error (EFBIG) reported in one
    line, not a core dump.

    Called once by the process entry point, not by in-process test runners.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


#: the exit status of a command whose standard output was closed (128 + SIGPIPE, what a shell
#: reports for a Unix tool killed by SIGPIPE: `yes | head -1` under `set -o pipefail`).
CLOSED_STDOUT_STATUS = 128 + int(getattr(signal, "SIGPIPE", 13))


def closed_stdout() -> int:
    """Standard output's reader has gone: point the descriptor at /dev/null so the interpreter's
    final flush does not fail again (Python would print "Exception ignored ... BrokenPipeError"),
    and return the status to exit with, :data:`CLOSED_STDOUT_STATUS`. Nothing is said on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # an in-process test runner's stdout has no descriptor
        pass
    return CLOSED_STDOUT_STATUS


def _report(message: str) -> None:
    typer.echo(f"epiformer: error: {message}", err=True)


# -- usage errors: one line, pointing at the command's help ----------------------------------------
def _click():
    """The Click that Typer runs on: its own copy (newer Typer vendors one as ``typer._click``, whose
    exceptions are not ``click``'s) or the ``click`` package (older Typer)."""
    import typer.core

    return getattr(typer.core, "_click", None) or typer.core.click


_ClickUsageError = _click().exceptions.UsageError


def help_pointer(command_path: str) -> str:
    """`` (see epiformer train -h)``: what ends every usage-error line."""
    return f" (see {command_path} -h)"


class OneLineUsageError(_ClickUsageError):
    """A Click usage error (an unknown command or option, a bad or missing value) said as ``epiformer:
    error: <what> (see epiformer CMD -h)``, exit 2, instead of Click's usage block and ``Error:`` line.
    ``original`` is Click's exception."""

    def __init__(self, what: str, command_path: str, original: Exception) -> None:
        super().__init__(what + help_pointer(command_path))
        self.original = original

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        _report(self.message)


#: Click quotes option names ("Missing option '--data'"); unquoted they read as what one types
_QUOTED_OPTION = re.compile(r"'(--?[A-Za-z0-9][\w-]*)'")
#: Typer's value checks (pydantic) say "Input should be a valid integer, unable to parse string as an integer"
_SHOULD_BE_VALID = re.compile(r"^Input should be (a valid [^,]+)(?:,.*)?$", re.S)


def _option_name(param) -> Optional[str]:
    """An option's long name (``--out`` of ``-o/--out``); None for an argument."""
    if getattr(param, "param_type_name", None) != "option" or not getattr(param, "opts", None):
        return None
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def _bad_value_message(exc) -> str:
    """What was wrong with the value, naming it: Typer's pydantic check does not, but the
    ValidationError it chains does (``'abc' is not a valid integer``)."""
    message = exc.message
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors) and message.startswith("Input should be "):
        try:
            value = errors()[0]["input"]
        except Exception:  # another pydantic's shape: keep Typer's words
            return message
        found = _SHOULD_BE_VALID.match(message)
        if found:
            return f"{value!r} is not {found.group(1)}"
        return f"{value!r} should be {message[len('Input should be '):]}"
    return message


def usage_line(exc) -> str:
    """Click's usage error ``exc`` as the ``<what>`` of one error line: lower case, option names
    unquoted, Click's suggestion ("Did you mean", "Possible options") kept, no trailing period."""
    exceptions = _click().exceptions
    if isinstance(exc, exceptions.NoSuchOption):
        what = f"no such option {exc.option_name}"
        if exc.possibilities:
            what += "; did you mean " + " or ".join(sorted(exc.possibilities)) + "?"
        return what
    if isinstance(exc, exceptions.BadParameter):
        name = _option_name(exc.param) if exc.param_hint is None else None
        if name:
            exc.param_hint = name  # one name, unquoted, instead of Click's "'--out' / '-o'"
        if not isinstance(exc, exceptions.MissingParameter):
            exc.message = _bad_value_message(exc)
    what = exc.format_message()
    what = " ".join(part.strip() for part in what.splitlines() if part.strip())
    what = _QUOTED_OPTION.sub(r"\1", what).replace(". Did you mean", "; did you mean")
    what = what.rstrip(".").rstrip()
    if what[:1].isupper() and not what[1:2].isupper():  # "No such ..." but not "VCF ..."
        what = what[0].lower() + what[1:]
    return what


@contextmanager
def one_line_usage_errors(command_path: str, ctx=None) -> Iterator[None]:
    """Turn Click's usage errors raised inside into :class:`OneLineUsageError`. The help pointer
    names the command whose parsing failed: the error's context, else ``ctx``'s subcommand being
    started (an option missing its value carries no context), else ``command_path``.
    ``epiformer`` alone still prints the help (Click's NoArgsIsHelpError passes through)."""
    exceptions = _click().exceptions
    try:
        yield
    except (OneLineUsageError, getattr(exceptions, "NoArgsIsHelpError", OneLineUsageError)):
        raise
    except _ClickUsageError as exc:
        if exc.ctx is not None:
            command_path = exc.ctx.command_path
        elif ctx is not None:
            command_path = ctx.command_path + (f" {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "")
        raise OneLineUsageError(usage_line(exc), command_path, exc) from exc


def _current_command_path() -> Optional[str]:
    """``epiformer train`` while Click runs that command; None when called outside Click."""
    ctx = _click().globals.get_current_context(silent=True)
    return ctx.command_path if ctx is not None else None


#: a message that already says where help is ("... see `epiformer train --help`")
_MENTIONS_HELP = re.compile(r"(?<![\w-])(-h|--help)(?![\w-])")


def _usage_message(message: str) -> str:
    """Our own UsageError's line, ending with the same help pointer as Click's parsing errors."""
    path = _current_command_path()
    if path is None or _MENTIONS_HELP.search(message):
        return message
    return message + help_pointer(path)


def handle_errors(command: Callable) -> Callable:
    """Turn core errors into one line on stderr and an exit code; tracebacks only with -v.

    EpiformerError -> its exit_code (1 runtime, 2 usage: the line then ends "(see epiformer CMD -h)",
    as Click's parsing errors do); Ctrl-C -> 130; SIGTERM -> 143;
    anything else is a bug: one line saying so (and the traceback with -v), exit 1.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except EpiformerError as exc:
            if STATE.verbose:
                traceback.print_exc(file=sys.stderr)
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _report(_usage_message(message) if exc.exit_code == 2 else message)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # the reader of our standard output went away (`| head`): end quietly, as Unix tools do
            raise typer.Exit(closed_stdout()) from None
        except Terminated:
            _report("terminated (SIGTERM); run the same command again to resume (train: with --resume)")
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            _report("interrupted (Ctrl-C); run the same command again to resume (train: with --resume)")
            raise typer.Exit(130) from None
        except OSError as exc:
            from epiformer_cli.io.faults import is_storage_fault, storage_error

            if STATE.verbose:
                traceback.print_exc(file=sys.stderr)
            if is_storage_fault(exc):  # a full disk met outside the atomic writers: still one line
                _report(str(storage_error(exc)))
            else:
                _report(f"internal error: {type(exc).__name__}: {exc} (run again with -v for the traceback and report it)")
            raise typer.Exit(1) from None
        except Exception as exc:  # a bug: say so in one line, keep the traceback for -v
            if STATE.verbose:
                traceback.print_exc(file=sys.stderr)
            _report(
                f"internal error: {type(exc).__name__}: {exc} "
                "(run again with -v for the traceback and report it)"
            )
            raise typer.Exit(1) from None

    return wrapper


def show_progress() -> bool:
    """Progress bars are drawn on a terminal and never with --quiet."""
    return not STATE.quiet and sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: Optional[float] = None, unit: str = "") -> Iterator[Progress]:
    """A rich progress bar on stderr; yields an :class:`~epiformer_cli.progress.Progress`
    (``advance(n=1, total=None, **status)``). Silent when not wanted."""
    with progress_bars((description, unit, total)) as (advance,):
        yield advance


@contextmanager
def progress_bars(*bars: Tuple[str, str, Optional[float]]) -> Iterator[List[Progress]]:
    """Several bars in one display, each ``(description, unit, total)``; yields one
    :class:`~epiformer_cli.progress.Progress` per bar (``advance(n=1, total=None, **status)``;
    the status values are shown after the bar). A bar shows from its first call, so a step that
    does not run (a null that is reused) leaves no empty bar behind. Silent when not wanted."""
    from epiformer_cli.progress import silent

    if not show_progress():
        yield [silent for _ in bars]
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )

    def advancer(description: str, unit: str, total: Optional[float]) -> Callable[..., None]:
        # shown from its first call: a step that does not run (or a torchrun rank that does not
        # report) leaves no empty bar behind
        task = progress.add_task(description, total=total, unit=unit, status="", visible=False)

        def advance(n: float = 1, total: Optional[float] = None, **status) -> None:
            if total is not None:
                progress.update(task, total=total)
            if status:
                progress.update(task, status="  ".join(f"{k} {_shown(v)}" for k, v in status.items()))
            progress.update(task, advance=n, visible=True)

        return advance

    with progress:
        yield [advancer(*bar) for bar in bars]


def _shown(value) -> str:
    """A status value as a bar shows it: numbers with 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def require(value: Optional[Path], option: str, envvar: Optional[str] = None) -> Path:
    """A required path option that may also come from the environment."""
    from epiformer_cli.errors import UsageError

    if value is None:
        hint = f" (or set {envvar})" if envvar else ""
        raise UsageError(f"missing option {option}{hint}")
    return value


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}
