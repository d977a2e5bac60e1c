"""Faults injected on purpose: someone else's files, a second process, odd outputs, hostile inputs, signals,
a full disk and broken config files. Each ends in one line and a non-zero exit, or works, and loses nothing."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import config_with, molecule_rows, user_error

from elemnet_jax import cli, data, featurizers, lock, run, workdir
from elemnet_jax.featurizers.estate import EStateFeaturizer
from elemnet_jax.predict import BLANK_WARNING, predict_file

_SCRIPT = Path(sys.executable).parent / 'elemnet-jax'
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, '-c', 'from elemnet_jax.cli import main; main()']
_ELEMENTS = ('Na', 'Cl', 'Fe', 'O', 'Mg', 'Al', 'Si', 'Ti', 'Cu', 'Zn', 'K', 'Ca', 'S', 'N', 'Li')


def _formulas_csv(path: Path, extra: str = '', scale: float = 1.0) -> Path:
  """A CSV `formula,y` of 150 binary compositions (no network, no shared data)."""
  rng = np.random.default_rng(0)
  rows = []
  for a, first in enumerate(_ELEMENTS):
    for b, second in enumerate(_ELEMENTS):
      if a < b and len(rows) < 150:
        rows.append(f'{first}{1 + (a + b) % 3}{second}{1 + a % 2},{scale * rng.uniform(-2, 1):.4f}')
  path.write_text('formula,y\n' + '\n'.join(rows) + '\n' + extra)
  return path


def _config(csv: Path, **fields):
  return config_with('test', {'dataset.name': str(csv), 'dataset.target': 'y', 'train.max_epochs': 2, **fields})


def _args(csv: Path, *more: str) -> list[str]:
  return ['--config=test', f'--config.dataset.name={csv}', '--config.dataset.target=y', *more]


# Runs a command with no file allowed to grow past N bytes (a disk that fills up), the signal for it ignored.
_FILE_SIZE_LIMIT = (
  'import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
  'n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])'
)


def _cli(*args, cwd, timeout=300, max_file_bytes=0) -> subprocess.CompletedProcess:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  if max_file_bytes:  # its writes to the test run's compilation cache would fail too, and leave cut-off entries
    env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  limit = [sys.executable, '-c', _FILE_SIZE_LIMIT, str(max_file_bytes)] if max_file_bytes else []
  return subprocess.run([*limit, *COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _one_line(done: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
  assert done.returncode == status, done.stderr[-2000:]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  for fragment in fragments:
    assert fragment in last, last
  return last


@pytest.fixture(scope='module')
def formulas(tmp_path_factory) -> Path:
  return _formulas_csv(tmp_path_factory.mktemp('data') / 'formulas.csv')


@pytest.fixture(scope='module')
def finished(tmp_path_factory, formulas) -> Path:
  path = tmp_path_factory.mktemp('runs') / 'finished'
  run.train_and_evaluate(_config(formulas), path)
  return path


# 1. A folder that is not a run: refused, nothing moved or deleted, --overwrite or not.


@pytest.mark.parametrize('overwrite', [False, True])
def test_a_folder_of_the_users_files_is_refused_and_left_alone(tmp_path, formulas, overwrite):
  project = tmp_path / 'project'
  (project / 'model').mkdir(parents=True)
  files = {'config.json': '{"mine": 1}', 'log.txt': 'notes', 'history.csv': 'a,b', 'split.csv': 'x', 'model/m': 'w'}
  for name, text in files.items():
    (project / name).write_text(text)
  user_error(
    lambda: run.train_and_evaluate(_config(formulas), project, overwrite=overwrite),
    f'{project}: holds files that no run wrote (config.json; history.csv; log.txt; model; split.csv)',
  )
  assert {name: (project / name).read_text() for name in files} == files
  assert sorted(p.name for p in project.iterdir()) == ['config.json', 'history.csv', 'log.txt', 'model', 'split.csv']


def test_a_run_records_what_it_writes(finished):
  record = json.loads((finished / workdir.RECORD).read_text())
  assert record['kind'] == 'run' and {'metrics.json', 'model', 'checkpoints'} <= set(record['writes'])
  assert len(record['data_sha256']) == 64
  assert not (finished / lock.LOCK_FILE).exists()  # released when the run finished


# 2. One process per workdir.


def test_a_stale_lock_is_taken_over_and_a_live_one_elsewhere_refused(tmp_path, formulas):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  path = tmp_path / 'run'
  path.mkdir()
  (path / lock.LOCK_FILE).write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname(), 'since': 'then'}))
  run.train_and_evaluate(_config(formulas, **{'train.max_epochs': 1}), path)
  assert (path / 'metrics.json').exists() and not (path / lock.LOCK_FILE).exists()
  other = tmp_path / 'other'
  other.mkdir()
  (other / lock.LOCK_FILE).write_text(json.dumps({'pid': 1, 'host': 'elsewhere', 'since': 'now'}))
  user_error(lambda: run.train_and_evaluate(_config(formulas), other), f'{other}: in use by process 1 on elsewhere')


def _default_signals() -> None:
  """SIGINT and SIGTERM as a terminal's command gets them: a shell's background job (`cmd &`) ignores SIGINT, and
  its children inherit that, so a test run started that way would otherwise send signals nobody hears."""
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
  """The command running in the background, its standard error going to a file (a pipe could fill up)."""
  log = (cwd / f'stderr.{time.monotonic_ns()}').open('w+')
  process = subprocess.Popen(
    [*COMMAND, *args], cwd=cwd, env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, stderr=log, preexec_fn=_default_signals
  )
  process.log = log
  return process


def _ended(process: subprocess.Popen) -> subprocess.CompletedProcess:
  process.wait(timeout=120)
  process.log.seek(0)
  return subprocess.CompletedProcess(process.args, process.returncode, '', process.log.read())


def _wait_for(condition, process: subprocess.Popen, seconds: float = 240) -> None:
  deadline = time.monotonic() + seconds
  while not condition():
    assert process.poll() is None, _ended(process).stderr[-3000:]
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.2)


def _checkpoints(path: Path) -> list[int]:
  return sorted(int(p.name) for p in (path / 'checkpoints').glob('*') if p.name.isdigit())


def test_a_second_run_is_refused_and_signals_end_in_one_line_keeping_the_checkpoint(tmp_path, formulas):
  endless = _args(formulas, '--config.train.max_epochs=1000000', '--config.train.patience=1000000', '--workdir=w')
  endless.append('--config.train.guard_epochs=0')  # trains on whatever it learns: the signals are the subject
  path = tmp_path / 'w'
  first = _start(['train', *endless], tmp_path)
  _wait_for(lambda: _checkpoints(path), first)
  for extra in ([], ['--overwrite']):
    _one_line(_cli('train', *endless, *extra, cwd=tmp_path), 2, f'w: in use by process {first.pid} on ')
  first.send_signal(signal.SIGINT)
  last = _one_line(_ended(first), 130, 'interrupted at epoch ')
  epoch = _checkpoints(path)[-1]
  assert last == f'interrupted at epoch {epoch}; run the same command to resume'
  assert not (path / lock.LOCK_FILE).exists()
  # The same command resumes from that epoch; SIGTERM ends it the same way, with 143, also right after the
  # resume is logged (while its programs compile).
  again = _start(['train', *endless], tmp_path)
  _wait_for(lambda: f'from epoch {epoch}' in (path / 'log.txt').read_text(), again)
  again.send_signal(signal.SIGTERM)
  _one_line(_ended(again), 143, 'run the same command to resume')
  assert not (path / lock.LOCK_FILE).exists()


# Signals at two awkward moments: the handler run inside a garbage collector callback (JAX registers one), whose
# exception Python reports as unraisable and drops; and a compile still running on XLA's threads when the signal
# ends the command (the interpreter's teardown under it would crash the process).
_SIGNALLED = {
  'in_a_gc_callback': """
import gc, signal, time
fired = []

def collecting(phase, info):
  if phase == 'start' and not fired:
    fired.append(phase)
    signal.raise_signal(signal.SIGTERM)
    for _ in range(1000):  # the handler runs in this loop, inside the collector's callback
      pass

def main(argv):
  gc.callbacks.append(collecting)
  gc.collect()
  time.sleep(30)
  print('not interrupted')
""",
  'while_compiling': """
import os, signal, threading
import jax, jax.numpy as jnp

def program(x):
  for i in range(300):  # a long chain of distinct operations: seconds of XLA compiling
    x = jnp.sin(x @ x.T + i) * jnp.cos(x[::-1] - i)
  return x.sum()

def main(argv):
  lowered = jax.jit(program).lower(jnp.ones((8, 8)))
  threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
  lowered.compile()
  print('not interrupted')
""",
}


@pytest.mark.parametrize('where', sorted(_SIGNALLED))
def test_a_sigterm_ends_the_command_in_one_line_wherever_it_arrives(tmp_path, where):
  script = _SIGNALLED[where] + '\nfrom elemnet_jax import cli\ncli.run(main, ["signalled"])\n'
  env = {**os.environ, 'JAX_ENABLE_COMPILATION_CACHE': 'false'}  # XLA compiles the program
  done = subprocess.run(
    [sys.executable, '-c', script],
    cwd=tmp_path,
    env={**env, 'JAX_PLATFORMS': 'cpu'},
    capture_output=True,
    text=True,
    timeout=25,
    preexec_fn=_default_signals,
  )
  assert done.stdout == '' and 'Exception ignored' not in done.stderr and 'Fatal Python error' not in done.stderr
  assert _one_line(done, 143) == 'interrupted; this process wrote nothing'


# 3. Outputs: standard output, fifos and devices written through, links followed.


def test_outputs_go_through_links_fifos_and_standard_output(tmp_path, capsys):
  target = tmp_path / 'target.csv'
  target.write_text('old')
  link = tmp_path / 'link.csv'
  link.symlink_to(target)
  workdir.write_text(link, 'new')
  assert link.is_symlink() and target.read_text() == 'new'
  fifo = tmp_path / 'fifo'
  os.mkfifo(fifo)
  reader = subprocess.Popen(['cat', str(fifo)], stdout=subprocess.PIPE, text=True)
  workdir.write_text(fifo, 'through the fifo')
  assert reader.communicate(timeout=30)[0] == 'through the fifo'
  assert fifo.is_fifo()
  workdir.write_text('-', 'to stdout')
  assert capsys.readouterr().out == 'to stdout'
  assert not workdir.replaces('/dev/null') and not workdir.replaces('-') and workdir.replaces(link)


def test_predict_writes_standard_output_for_dash(finished, capsys):
  predict_file([str(finished)], inputs=['Fe2O3'], output='-')
  assert capsys.readouterr().out.splitlines()[0].startswith('input,')


# 4. Inputs: strict numbers finite in float32, an atom limit, all-zero features.


@pytest.mark.parametrize(
  'text, reason',
  [
    ('1e39', 'outside the float32 range'),
    ('-1e308', 'outside the float32 range'),
    ('-1_5', 'not a number'),
    ('\uff11\uff12', 'not a number'),
    ('1 2', 'not a number'),
    ('0x10', 'not a number'),
    ('nan', 'target is nan'),
    ('', 'missing'),
  ],
)
def test_targets_must_be_decimal_numbers_finite_in_float32(text, reason):
  value, why = data.parse_target(text)
  assert np.isnan(value) and reason in why


def test_valid_targets_parse():
  assert [data.parse_target(t)[0] for t in ('-1.5', '+2', '.5', '3.', '1e-3', '3e38')] == [-1.5, 2, 0.5, 3, 1e-3, 3e38]


def test_a_target_beyond_float32_is_refused_naming_its_row(tmp_path):
  csv = _formulas_csv(tmp_path / 'big.csv', extra='Fe2O3,1e39\nMgO,-1e39\n')
  row = len(csv.read_text().splitlines()) - 1  # the header is row 1
  user_error(
    lambda: run.train_and_evaluate(_config(csv), tmp_path / 'run'),
    f"{csv}: 2 invalid input row(s): row {row} ('1e39'): target is outside the float32 range",
    f"row {row + 1} ('-1e39'): target is outside the float32 range",
  )
  assert not (tmp_path / 'run').exists()


def test_a_molecule_over_the_atom_limit_is_invalid_before_its_estate():
  tic = time.perf_counter()
  _, _, invalid = EStateFeaturizer(workers=1).featurize(['C' * 20000, 'CCO'])
  assert time.perf_counter() - tic < 10
  assert invalid == [(0, 'molecule has 20000 heavy atoms, over the limit of 500 (featurizer.max_atoms)')]
  _, _, invalid = EStateFeaturizer(workers=1, max_atoms=10).featurize(['C' * 11, 'C' * 10])
  assert [i for i, _ in invalid] == [0]
  assert 'max_atoms' not in EStateFeaturizer(max_atoms=10).description()  # a model predicts with the default


def test_inputs_whose_features_are_all_zero_are_counted_and_flagged(tmp_path, capsys):
  alike = ['C', 'O', '[H][H]', '[CH3]', '[O]', '[2H]O[2H]']
  featurizer = EStateFeaturizer(workers=1)
  x, _, invalid = featurizer.featurize(alike + ['CCO'])
  assert not invalid and featurizers.blank_rows(featurizer, x).tolist() == [True] * 6 + [False]
  rows = [(s, v) for s, v in molecule_rows()[:80]] + [(s, 0.5) for s in alike[:2]]
  csv = tmp_path / 'molecules.csv'
  csv.write_text('smiles,y\n' + ''.join(f'{s},{v}\n' for s, v in rows))
  fields = {'dataset.input_column': 'smiles', 'dataset.input_kind': 'smiles', 'featurizer.name': 'estate'}
  metrics = run.train_and_evaluate(_config(csv, **fields, **{'train.max_epochs': 1}), tmp_path / 'run')
  assert metrics['data']['all_zero_features'] == 2
  inputs = ['C', 'CCO', '[Na+].[Cl-]', '[Na+].[Br-]']
  result = predict_file([str(tmp_path / 'run')], inputs=inputs, output=str(tmp_path / 'out.csv'))
  assert BLANK_WARNING in result.warnings[0] and BLANK_WARNING not in result.warnings[1]
  assert BLANK_WARNING in (tmp_path / 'out.csv').read_text().splitlines()[1]
  # The halide ions have no E-state type: the two salts get one prediction, and a warning naming the ion.
  assert result.mean[2] == result.mean[3] and 'atoms the features do not see: Cl-' in result.warnings[2]
  assert 'atoms the features do not see: Br-' in result.warnings[3] and not result.warnings[1]


# 5. Resume only on the data the run started on.


def test_an_interrupted_run_refuses_to_resume_on_changed_data(tmp_path):
  csv = _formulas_csv(tmp_path / 'data.csv')
  path = tmp_path / 'run'
  run.train_and_evaluate(_config(csv), path)
  (path / 'metrics.json').unlink()  # what a kill before the end leaves: config and checkpoints
  _formulas_csv(csv, scale=2.0)  # rescaled
  user_error(
    lambda: run.train_and_evaluate(_config(csv), path),
    f'{path}: the training data changed since this run started; pass --overwrite',
  )
  assert _checkpoints(path)
  _formulas_csv(csv)  # restored: it resumes
  assert run.train_and_evaluate(_config(csv), path)['epochs'] == 2


# 6. A full disk while writing a checkpoint: one line naming it, exit 2.


def test_a_full_disk_during_a_checkpoint_is_one_line(tmp_path, formulas):
  # No file may grow past 20 kB: the first checkpoint's parameters cannot be written.
  done = _cli('train', *_args(formulas, '--workdir=w'), cwd=tmp_path, max_file_bytes=20_000)
  last = _one_line(done, 2, 'error: ', 'w/checkpoints/1: cannot be written (File too large)')
  assert [line for line in done.stderr.splitlines() if line and not line.startswith('I')] == [last], done.stderr


def test_asyncio_reports_of_orbax_writes_that_failed_with_the_save_are_dropped():
  # When one write of an asynchronous save fails, orbax's other writes fail too; asyncio reports each
  # unretrieved one with a traceback when it is collected, a report the command's one line already covers.
  def report(coroutine_file: str) -> logging.LogRecord:
    message = (
      f'Task exception was never retrieved\nfuture: <Task finished coro=<write() defined at {coroutine_file}:114>'
    )
    try:
      raise ValueError('OUT_OF_RANGE: Failed to write 38474 bytes: File too large')
    except ValueError:
      return logging.getLogger('asyncio').makeRecord(
        'asyncio', logging.ERROR, 'base_events.py', 1, message, (), sys.exc_info()
      )

  quiet = workdir.QuietLibraries()
  assert not quiet.filter(report('/site-packages/orbax/checkpoint/_src/serialization/type_handlers.py'))
  assert quiet.filter(report('/home/user/own_code.py'))  # any other task's error is still shown


def test_reports_of_a_failed_saves_other_writes_at_collection_are_dropped(capsys, monkeypatch):
  # The same writes, reported by Python when an object holding the error is collected.
  class Holder:
    def __init__(self, error: BaseException):
      self.error = error

    def __del__(self):
      raise self.error

  monkeypatch.setattr(sys, 'unraisablehook', cli._drop_library_reports)
  written = '"/w/checkpoints/1.orbax-checkpoint-tmp/state": File too large'
  for error in (ValueError(f'OUT_OF_RANGE: Error writing {written}'), RuntimeError('Event loop is closed')):
    Holder(error)
  assert capsys.readouterr().err == ''
  Holder(ValueError('a bug of ours'))  # anything else is still reported
  assert 'ValueError: a bug of ours' in capsys.readouterr().err


# 7. Config files and values that used to trace back.


def test_config_files_that_fail_are_one_line(tmp_path):
  files = {
    'raises.py': ('def get_config():\n  raise RuntimeError("boom")\n', 'cannot be loaded (RuntimeError: boom)'),
    'imports.py': ('import nosuchmodule\n', "(ModuleNotFoundError: No module named 'nosuchmodule')"),
    'syntax.py': ('def get_config(:\n', 'cannot be loaded (SyntaxError: '),
    'none.py': ('def get_config():\n  return None\n', 'get_config() returned None'),
  }
  for name, (text, message) in files.items():
    (tmp_path / name).write_text(text)
    done = _cli('train', f'--config={name}', '--workdir=w', cwd=tmp_path)
    assert _one_line(done, 2, f'error: --config={name}: ', message)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
  assert not (tmp_path / 'w').exists()


def test_non_finite_config_values_are_one_line():
  bad_split = {'dataset.split': (0.8, 'nan', 0.1)}
  user_error(lambda: config_with('test', bad_split), "--config.dataset.split=(0.8, 'nan', 0.1)")
  bad_split = {'dataset.split': (0.8, float('nan'), 0.1)}
  user_error(lambda: config_with('test', bad_split), '--config.dataset.split=(0.8, nan, 0.1)')
  warmup = {'train.warmup_epochs': float('inf')}
  user_error(lambda: config_with('test', warmup), '--config.train.warmup_epochs=inf: must be a finite number')


def test_corrupted_scaling_in_meta_json_is_one_line(finished, tmp_path):
  import shutil

  copy = shutil.copytree(finished, tmp_path / 'copy')
  meta_path = copy / 'model' / 'meta.json'
  for field, value in (('target_scaling', {'shift': 'x', 'scale': 1}), ('feature_scaling', {'keep': [0]})):
    meta = json.loads((finished / 'model' / 'meta.json').read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    user_error(lambda: predict_file([str(copy)], inputs=['Fe2O3']), f'{meta_path}: corrupted model metadata (')
