"""What a scoring script sees of its process, set as Azure sets it and undone afterwards.

``AZUREML_MODEL_DIR`` holds the model under its own base name, ``AZUREML_BI_OUTPUT_PATH`` is the
job's output folder, ``settings.environment_variables`` are set, ``sys.argv`` is the script's
own, and a GPU of an embedded cluster becomes ``CUDA_VISIBLE_DEVICES``; what the script's
import and ``init()`` set in ``os.environ`` is its job's own as well (:class:`ScriptVariables`),
and so is its current directory (:mod:`daskscore.worker.workdir`).  Used by the worker
runtime and by ``daskscore validate`` alike.  What the script prints or logs is masked
(:class:`RedactingStream`, :class:`RedactingFilter`) and written whatever the names it holds.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daskscore.config import redact
from daskscore.io import storage, storesecrets
from daskscore.protocol import WorkerJob
from daskscore.worker.residue import Residue
from daskscore.worker.workdir import WorkingDirectory

#: How the logs a script writes encode a str that is not valid Unicode: a file name that is not
#: UTF-8 (``bad\xffname.txt`` is listed as ``bad\udcffname.txt``) is written ``\udcff``.
NAME_ERRORS = "backslashreplace"


def set_environment(
    job: WorkerJob, saved: dict[str, Any], device: str | None = None, folder: str | None = None
) -> str:
    """Set what a scoring script sees, as Azure does; return the model folder made for it.

    ``AZUREML_MODEL_DIR`` is a new temporary folder (in ``folder``: a worker's own scratch
    folder, which Dask removes should the process die) holding a symlink to the model under
    its own base name; ``AZUREML_BI_OUTPUT_PATH`` and ``job.env`` are set; ``sys.argv`` is
    the script's own; a ``device`` becomes ``CUDA_VISIBLE_DEVICES``.  What
    :func:`restore_environment` needs to undo it is kept in ``saved``.
    """
    model_dir = tempfile.mkdtemp(prefix="daskscore-model-", dir=folder)
    if job.model_path:
        model = Path(job.model_path)
        os.symlink(model, Path(model_dir) / model.name, target_is_directory=model.is_dir())
    env = script_environment(job, model_dir, device)
    saved["env"] = {}
    _own_view(saved, env)
    storage.refresh_filesystems()
    saved["argv"] = ARGV.push([job.script])
    saved["cwd"] = cwd = WorkingDirectory()
    cwd.enter()
    return model_dir


def script_environment(
    job: WorkerJob, model_dir: str | None, device: str | None
) -> dict[str, str | None]:
    """The variables a scoring script of ``job`` sees: a warm cluster's job's storage
    variables, the driver's (None: unset), then the deployment's, then Azure's
    (``AZUREML_MODEL_DIR``, ``AZUREML_BI_OUTPUT_PATH``) and a ``device``'s
    ``CUDA_VISIBLE_DEVICES``."""
    env: dict[str, str | None] = {}
    if job.storage_env is not None:
        env.update(storesecrets.storage_view(job.storage_env))
    env.update(job.env)
    if model_dir:
        env["AZUREML_MODEL_DIR"] = model_dir
    env["AZUREML_BI_OUTPUT_PATH"] = job.output
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


def reassert_environment(
    saved: dict[str, Any], env: dict[str, str | None], argv: list[str]
) -> None:
    """Set ``env`` and ``argv`` again for the job whose environment :func:`set_environment`
    set into ``saved`` (a warm script taken over by the next job: some values are the new
    job's), as the newest of the jobs installed in this process: with the variables its
    script's import and ``init()`` set (:class:`ScriptVariables`) and its current directory."""
    _own_view(saved, {**env, **saved.get("script_env", {})})
    storage.refresh_filesystems()
    saved["argv"] = ARGV.reassert(saved.get("argv"), list(argv))
    if saved.get("cwd") is not None:
        saved["cwd"].reassert()


def _own_view(saved: dict[str, Any], env: dict[str, str | None]) -> None:
    """Make the job of ``saved`` the newest, seeing ``env`` and otherwise the process's own
    values: a variable another open job set (a ``score()`` session whose client closed, a
    killed driver's job not yet removed) is the process's own for this job, not that job's
    value — it went into the next job's results unseen."""
    tokens = saved.setdefault("env", {})
    with _LOCK:
        others = [name for name, v in _VARIABLES.items() if v.layered() and name not in env]
        for key in [*env, *others, *(k for k in tokens if k not in env and k not in others)]:
            var = _variable(key)
            value = env[key] if key in env else var.own()
            tokens[key] = var.reassert(tokens.get(key), value)
        _NEWEST[0] = saved


def is_newest(saved: dict[str, Any]) -> bool:
    """Whether the job of ``saved`` is the one whose environment the process has now."""
    return _NEWEST[0] is saved


def restore_environment(saved: dict[str, Any]) -> None:
    """Undo :func:`set_environment`: each variable it set takes the value of the newest job
    still installed that set it, else the process's own; ``sys.argv`` likewise; the current
    directory is the process's own again (see :class:`WorkingDirectory`); what else the
    script's import and ``init()`` set is undone where it can be (see :class:`Residue`)."""
    for key, token in saved.pop("env", {}).items():
        _variable(key).pop(token)
    ARGV.pop(saved.pop("argv", None))
    saved.pop("script_env", None)
    residue = saved.pop("residue", None)
    if residue is not None:  # (what else the script's import and init() set)
        residue.undo()
    if _NEWEST[0] is saved:
        _NEWEST[0] = None
    cwd = saved.pop("cwd", None)
    if cwd is not None:
        cwd.close()


#: (:meth:`Overlapped.push` without a ``base``: the value the process has now)
_NOW = object()


class Overlapped:
    """A setting of the whole process that installed jobs each set while they are open: an
    environment variable, ``sys.argv``, ``sys.stdout``/``sys.stderr`` (each job's log), the
    root logger's level.  Jobs can overlap in one process (two sessions on one client): the
    newest open job's value holds, and undoing one in any order leaves the newest of those
    still open, then the process's own (never a closed job's value: its log file is closed,
    its variables may be secrets)."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self._get, self._put = get, put
        self._layers: list[list[Any]] = []
        self._base: Any = None

    def push(self, value: Any, base: Any = _NOW) -> list[Any]:
        """Set ``value`` for a job; return the token that undoes it (to ``base`` when no other
        job's value is set: by default the value the process has now)."""
        with _LOCK:
            if not self._layers:
                self._base = self._get() if base is _NOW else base
            token = [value]
            self._layers.append(token)
            self._put(value)
            return token

    def reassert(self, token: list[Any] | None, value: Any, base: Any = _NOW) -> list[Any]:
        """Set ``value`` again for the job of ``token``, now the newest; return its token
        (``base``: as :meth:`push`'s)."""
        with _LOCK:
            if token is not None and any(t is token for t in self._layers):
                self._layers = [t for t in self._layers if t is not token]
                token[0] = value
                self._layers.append(token)
                self._put(value)
                return token
            return self.push(value, base)

    def layered(self) -> bool:
        """Whether an open job set it."""
        return bool(self._layers)

    def own(self) -> Any:
        """The process's own value (from before any open job set one)."""
        return self._base if self._layers else self._get()

    def pop(self, token: list[Any] | None) -> None:
        """Undo the job of ``token`` (again: nothing)."""
        with _LOCK:
            if token is None or all(t is not token for t in self._layers):
                return
            self._layers = [t for t in self._layers if t is not token]
            self._put(self._layers[-1][0] if self._layers else self._base)
            if not self._layers:
                self._base = None


_LOCK = threading.RLock()
#: the ``saved`` of the job whose environment the process has (the newest, or the last made so)
_NEWEST: list[Any] = [None]
#: each environment variable a job set (made when first set)
_VARIABLES: dict[str, Overlapped] = {}


def _variable(name: str) -> Overlapped:
    with _LOCK:
        found = _VARIABLES.get(name)
        if found is None:

            def put(value: str | None) -> None:
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

            found = _VARIABLES[name] = Overlapped(lambda: os.environ.get(name), put)
        return found


def _set_argv(argv: list[str]) -> None:
    sys.argv = list(argv)


def _set_streams(stream: Any) -> None:
    if isinstance(stream, tuple):
        sys.stdout, sys.stderr = stream
    else:
        sys.stdout = sys.stderr = stream


#: ``sys.argv`` (the script's own) ...
ARGV = Overlapped(lambda: list(sys.argv), _set_argv)
#: ... the jobs' logs as ``sys.stdout`` and ``sys.stderr`` (the process's own: a pair) ...
STREAMS = Overlapped(lambda: (sys.stdout, sys.stderr), _set_streams)
#: ... the root logger's level ...
ROOT_LEVEL = Overlapped(lambda: logging.getLogger().level, logging.getLogger().setLevel)


def _set_log_handler(handler: logging.Handler | None) -> None:
    root, old = logging.getLogger(), _LOG_HANDLER[0]
    if old is not None and old is not handler:
        root.removeHandler(old)
    if handler is not None:
        root.addHandler(handler)
    _LOG_HANDLER[0] = handler


_LOG_HANDLER: list[logging.Handler | None] = [None]
#: ... and the one job's log handler on the root logger: the newest job's (the one whose call
#: runs, or ran last), so that a job's log has the records of its own calls, not another's
LOG_HANDLER = Overlapped(lambda: None, _set_log_handler)


#: Entries of ``AZUREML_MODEL_DIR`` listed after a file not found there, at most ...
LISTED_ENTRIES = 20
#: ... and how deep.
LISTED_DEPTH = 4


def missing_model_file(exc: BaseException, model_dir: str | None) -> str:
    """For an ``OSError`` about a path under ``AZUREML_MODEL_DIR`` (a script that looks for its
    model where it is not), what that folder holds: a few entries, recursively; else ""."""
    missing = getattr(exc, "filename", None)
    if not model_dir or not isinstance(exc, OSError) or not isinstance(missing, (str, Path)):
        return ""
    root = os.path.realpath(model_dir)
    if not (str(missing).startswith(model_dir) or os.path.realpath(missing).startswith(root)):
        return ""
    entries = list_folder(Path(model_dir))
    shown = "\n".join(f"  $AZUREML_MODEL_DIR/{e}" for e in entries[:LISTED_ENTRIES])
    more = "\n  ... (more not listed)" if len(entries) > LISTED_ENTRIES else ""
    return (
        f"{missing} was looked for under AZUREML_MODEL_DIR ({model_dir}), which holds the "
        "model under its own base name (model.path: model -> $AZUREML_MODEL_DIR/model/...):\n"
        + (shown + more if entries else "  (nothing)")
    )


def list_folder(root: Path) -> list[str]:
    """Up to :data:`LISTED_ENTRIES` + 1 paths under ``root`` (folders end in ``/``), sorted
    level by level, followed through the symbolic link to the model."""
    found: list[str] = []
    level = [root]
    for _ in range(LISTED_DEPTH):
        below = []
        for folder in level:
            try:
                children = sorted(folder.iterdir())
            except OSError:
                continue
            for child in children:
                is_dir = child.is_dir()
                found.append(child.relative_to(root).as_posix() + ("/" if is_dir else ""))
                if is_dir:
                    below.append(child)
                if len(found) > LISTED_ENTRIES:
                    return sorted(found)
        level = below
    return sorted(found)


class RedactingStream:
    """A text stream that masks secret values before they reach the log file."""

    def __init__(self, stream: Any, secrets: tuple[str, ...]) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class SwitchableStream:
    """A text stream whose target file can change (a warm runtime's next job has its own log
    file) while ``sys.stdout`` stays the same object."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def switch(self, stream: Any) -> None:
        """Write to ``stream`` from now on (the previous target is flushed, not closed)."""
        old, self._stream = self._stream, stream
        try:
            old.flush()
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class RedactingFilter(logging.Filter):
    """Masks secret values in a log record before a handler writes it: the message with its
    arguments, the traceback and the stack (the record itself is changed, so every handler
    after this one sees it masked)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the handler reports it
            return True
        record.msg, record.args = redact(message, self._secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def mask_handlers(logger: logging.Logger, secrets: tuple[str, ...]) -> Any:
    """Put a :class:`RedactingFilter` on every handler ``logger`` has now: those a worker
    process inherited (a worker forked from ``daskscore run --verbose`` holds its stderr
    handler) as well as its own; return a function that takes them off again."""
    if not secrets:
        return lambda: None
    masking = RedactingFilter(secrets)
    handlers = list(logger.handlers)
    for handler in handlers:
        handler.addFilter(masking)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(masking)

    return undo


class ScriptVariables:
    """The environment variables a script's import and ``init()`` set of their own
    (``os.environ["X"] = ...``, or a value over the deployment's): layered as its job's own
    (see :class:`Overlapped`), so that its ``run()`` calls see them again when another job
    installed in the process since set or unset them (:func:`reassert_environment`), other
    jobs' calls do not see them, and they are undone with the job's in any order: the next
    deployment in the process (a warm worker's) starts from the process's own environment,
    as in a fresh one.  What else they set in the process is noted too, and what can be is
    undone with it (:class:`~daskscore.worker.residue.Residue`; ``streams``: the job's log)."""

    def __init__(self, streams: tuple[Any, ...] = ()) -> None:
        self._before = dict(os.environ)
        self._residue = Residue(streams)

    def taken(self, saved: dict[str, Any]) -> None:
        """The script's import and ``init()`` are done: what they changed becomes part of the
        environment of the job of ``saved`` (set by :func:`set_environment`)."""
        now = dict(os.environ)
        changed = {
            key: now.get(key)
            for key in set(now) | set(self._before)
            if now.get(key) != self._before.get(key)
        }
        saved["script_env"] = changed
        self._residue.taken()
        saved["residue"] = self._residue
        tokens = saved.setdefault("env", {})
        with _LOCK:
            for key, value in changed.items():
                before = self._before.get(key)  # (the process's own, if no job set it)
                tokens[key] = _variable(key).reassert(tokens.get(key), value, before)
