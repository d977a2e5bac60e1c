"""The `elemnet-jax` console command: `elemnet-jax COMMAND [--flags]`, one library call per command.

User mistakes (files, flags, config fields) end with one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import errno
import logging as python_logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from elemnet_jax import configs, interrupts, workdir
from elemnet_jax.errors import UserError
from elemnet_jax.workdir import QuietLibraries

COMMANDS = {
  'train': ('default', 'Trains ElemNet on a registered dataset or a CSV file (pretraining).'),
  'finetune': ('finetune', 'Fine-tunes a finished run or a shipped model (--pretrained=oqmd_fe) on another dataset.'),
  'study': ('demo', 'The transfer study: scratch vs fine-tuning vs frozen featurizer vs the source as is.'),
  'predict': (None, 'Predicts formulas or SMILES with finished runs: a CSV with the mean, std and errors.'),
  'fingerprint': (None, "A finished run's hidden-layer activations for inputs, as CSV or NPY."),
  'benchmark': (None, 'Times training throughput against a measured matmul peak and memory bandwidth.'),
}


def _drop_library_reports(unraisable) -> None:
  """Drops what a failed orbax restore's leftover tensorstore reads report to a closed event loop, and the
  reports of a failed save's other writes when they are collected: the command's one line names the failed
  write (orbax raises it again in the command at its next save or at the end). A Ctrl-C or SIGTERM that
  Python dropped is delivered again."""
  error = unraisable.exc_value
  if interrupts.redeliver(error):
    return
  closed_loop = isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'
  if not (closed_loop or _failed_write(error) is not None):
    sys.__unraisablehook__(unraisable)


def fail(message: str) -> None:
  """Ends the program with one line and status 2; a message that carries a traceback keeps its first and last lines."""
  lines = str(message).strip().splitlines() or ['']
  print(f'error: {lines[0]}' + (f' {lines[-1]}' if len(lines) > 1 else ''), file=sys.stderr)
  sys.exit(2)


def _unknown_field(error: Exception, argv: list[str]) -> str:
  """ml_collections' error for an override of a field the config lacks, as the flag the user gave."""
  text = error
  while isinstance(text, BaseException):  # the KeyError may come wrapped in an AttributeError
    text = text.args[0] if text.args else ''
  field = re.search(r"'([^']+)'", str(text))
  given = [arg for arg in argv[1:] if field and f'.{field.group(1)}.' in arg.split('=')[0] + '.']
  if not given:  # not an override's field (e.g. an error inside a config file's own code)
    return f'{type(error).__name__}: {text}'
  hint = re.search(r'Did you mean "([^"]+)"', str(text))
  return f'{given[0]}: the config has no field {field.group(1)!r}' + (
    f' (did you mean {hint.group(1)!r}?)' if hint else ''
  )


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its mistakes reported as one line and status 2 like the rest."""
  absl_logger = python_logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(python_logging.ERROR)  # ml_collections' warning for a None config: the error below says it
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      flags.FLAGS.config  # noqa: B018 - loads the config file and applies the overrides now
    absl_logger.setLevel(level)
  except (flags.Error, ValueError, OSError, TypeError) as error:  # e.g. an unknown config variant or path
    fail(str(error))
  except (AttributeError, KeyError) as error:
    fail(_unknown_field(error, argv))
  except Exception as error:  # noqa: BLE001 - a config file's own code: it raised, failed to import or to parse
    fail(f'{_config_given(argv)}: cannot be loaded ({type(error).__name__}: {error})')
  if 'config' in flags.FLAGS and not hasattr(flags.FLAGS.config, 'items'):
    fail(f'{_config_given(argv)}: get_config() returned {flags.FLAGS.config!r}, not an ml_collections.ConfigDict')
  if 'workdir' in flags.FLAGS and flags.FLAGS['workdir'].present and not flags.FLAGS.workdir:
    fail('--workdir is empty')  # it would mean the current folder
  if len(rest) > 1:
    fail(f'unexpected argument {rest[1]!r}; flags are given as --name=value')
  return rest


def _config_given(argv: list[str]) -> str:
  return next((arg for arg in argv if arg.startswith('--config=')), '--config')


def config_fields(config, prefix: str = 'config') -> list[str]:
  """Every overridable field of a config as ``--config.a.b=default``."""
  lines = []
  for key, value in config.items():
    if hasattr(value, 'items'):
      lines += config_fields(value, f'{prefix}.{key}')
    else:
      lines.append(f'  --{prefix}.{key}={value!r}')
  return lines


def _help(command: str, names: list[str], argv: list[str]) -> str:
  default, summary = COMMANDS[command]
  text = [f'elemnet-jax {command}: {summary}', '', 'Flags:']
  for name in names:
    flag = flags.FLAGS[name]
    shown = default if name == 'config' else flag.default
    text.append(f'  --{name}: {flag.help} (default: {shown!r})')
  if default is not None:
    name = next((arg.split('=', 1)[1] for arg in argv if arg.startswith('--config=')), default)
    text += ['', f'Config fields of --config={name} (named configs: {", ".join(configs.NAMES)}, or a path):']
    try:
      text += config_fields(configs.get_config(name) if name.split(':')[0] in configs.NAMES else _load_path(name))
    except Exception as error:  # noqa: BLE001 - the help still shows the flags
      text.append(f'  (cannot load {name}: {error})')
  return '\n'.join(text)


def _load_path(path: str):
  import importlib.util

  file, _, variant = path.partition(':')
  spec = importlib.util.spec_from_file_location('config_for_help', file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def _config_path(name: str) -> str:
  """`--config=PATH` for a named config or a config file; neither: one line and status 2."""
  path = configs.path_of(name)
  if not Path(path.split(':')[0]).is_file():
    fail(f'--config={name}: neither a named config ({", ".join(configs.NAMES)}) nor a config file')
  return f'--config={path}'


def _overview() -> str:
  width = max(map(len, COMMANDS))
  lines = ['usage: elemnet-jax COMMAND [--flags]   (elemnet-jax COMMAND --help lists its flags and config fields)', '']
  lines += [f'  {name:<{width}}  {summary}' for name, (_, summary) in COMMANDS.items()]
  return '\n'.join(lines)


_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES)


def _failed_write(error: BaseException) -> str | None:
  """One line for an error caused by a failed write (disk full, say), naming the file; None for any other error."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError):
      return f'{seen.filename or _writing()}: cannot be written ({seen.strerror or seen})'
    seen = seen.__cause__ or seen.__context__
  text = str(error)
  reason = next((os.strerror(code) for code in _WRITE_ERRORS if os.strerror(code) in text), None)
  if reason is None:
    return None
  named = re.search(r'"(/[^"]+)"', text)  # tensorstore quotes the file; orbax writes a step in <step>.orbax-...
  return f'{named.group(1).split(".orbax-checkpoint-tmp")[0] if named else _writing()}: cannot be written ({reason})'


def _writing() -> str:
  """The workdir being written, for an error that names no file."""
  return str(workdir.started()[-1].path) if workdir.started() else 'an output'


def _leave_together() -> None:
  """The processes a SIGTERM stopped at the same epoch end together (process 0 hosts JAX's service)."""
  from elemnet_jax.training import distributed

  distributed.leave()


def run(main: Callable[[list[str]], object], argv: list[str], keep_compiled: bool = True) -> None:
  """`absl.app.run(main)` on `argv`: a UserError or failed write ends it with one line and status 2, Ctrl-C or
  SIGTERM with one line and status 130 or 143 (the last checkpoint kept). With `keep_compiled`, compiled
  programs are kept between commands (`training.compile_cache`)."""

  def wrapped(args):
    for logger in ('absl', 'asyncio'):
      python_logging.getLogger(logger).addFilter(QuietLibraries())
    python_logging.getLogger('jax._src.xla_bridge').setLevel(python_logging.WARNING)  # "no TPU backend"
    sys.unraisablehook = _drop_library_reports
    interrupts.catch_sigterm()
    try:
      if keep_compiled:
        from elemnet_jax.training import compile_cache

        compile_cache.enable()
      return main(args)
    except (UserError, OSError) as error:  # OSError: a path the user gave (unwritable, missing, disk full)
      fail(str(error))
    except (KeyboardInterrupt, interrupts.Terminated) as interrupt:  # the last checkpoint is complete
      together = _leave_together if isinstance(interrupt, interrupts.Preempted) else None
      interrupts.end(interrupt, workdir.interruption_message, together)
    except Exception as error:  # noqa: BLE001 - a library's wrapping of a failed write (orbax, tensorstore)
      failed_write = _failed_write(error)
      if failed_write is None:
        raise
      fail(failed_write)

  app.run(wrapped, argv=argv, flags_parser=_parse_flags)


def main(argv: list[str] | None = None) -> None:
  """Entry point of the console script (and of `python -m experiments.COMMAND`)."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(_overview())
    sys.exit(0 if len(argv) >= 2 else 2)
  command, rest = argv[1], argv[2:]
  if command not in COMMANDS:
    fail(f'unknown command {command!r}; use one of {", ".join(COMMANDS)}')
  from elemnet_jax import commands  # defines the flags of `command` only

  default = COMMANDS[command][0]
  if default is not None:
    rest = [_config_path(a.split('=', 1)[1]) if a.startswith('--config=') else a for a in rest]
    try:  # ml_collections applies the overrides in sys.argv as soon as the flag is defined
      config_flags.DEFINE_config_file('config', configs.path_of(default), 'A named config or a config file (.py).')
    except (AttributeError, KeyError) as error:
      fail(_unknown_field(error, ['elemnet-jax'] + rest))
    flags.DEFINE_bool('print_config', False, 'Print the resolved config and exit.')
  body, names = commands.define(command)
  if any(arg in ('-h', '--help', '--helpshort', '--helpfull') for arg in rest):
    print(_help(command, names + (['config', 'print_config'] if default else []), argv[2:]))
    sys.exit(0)
  # The benchmark times compilation itself: it compiles every time.
  run(body, [f'elemnet-jax {command}'] + rest, keep_compiled=command != 'benchmark')
