"""The `elemnet-jax` command as a user runs it: from any folder, exit codes, one-line errors, a killed run."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

_SCRIPT = Path(sys.executable).parent / 'elemnet-jax'
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, '-c', 'from elemnet_jax.cli import main; main()']


def elemnet_jax(*args, cwd, check=True, timeout=600):
  done = subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
  if check and done.returncode != 0:
    raise AssertionError(f'elemnet-jax {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}')
  return done


def assert_user_error(done, *fragments):
  assert done.returncode == 2, done.stderr[-2000:]
  assert 'Traceback' not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: '), last
  for fragment in fragments:
    assert fragment in last, last


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run trained on SSUB by the installed command, from a folder outside the repository."""
  folder = tmp_path_factory.mktemp('cli')
  done = elemnet_jax('train', '--config=test', '--workdir=w', '--config.train.max_epochs=2', cwd=folder)
  assert "Unable to initialize backend 'tpu'" not in done.stderr
  return folder


def test_every_command_runs_from_any_folder(trained):
  folder = trained
  assert json.loads((folder / 'w' / 'metrics.json').read_text())['epochs'] == 2
  consent = '--config.transfer.allow_collapsed_source=True'  # 2 epochs of a tiny network do not beat the median
  elemnet_jax('finetune', '--pretrained=w', '--workdir=ft', '--config.train.max_epochs=1', consent, cwd=folder)
  done = elemnet_jax('predict', '--models=ft', '--formulas=Fe2O3,Xx', cwd=folder)
  header, *rows = csv.reader(io.StringIO(done.stdout))
  assert header[:2] == ['input', 'formation enthalpy (eV/atom)'] and len(rows) == 2
  assert float(rows[0][1]) < 0 and rows[1][1] == '' and rows[1][3] == "unknown element symbol 'Xx'"
  elemnet_jax('fingerprint', '--models=ft', '--formulas=Fe2O3,NaCl', '--output=f.npy', cwd=folder)
  assert np.load(folder / 'f.npy').shape == (2, 16)
  study = ("--config.study.methods=('direct','featurizer')", '--config.study.seeds=1', '--config.study.pretrained=w')
  done = elemnet_jax('study', '--config=test:study', '--workdir=study', *study, cwd=folder)
  assert '| share of target train (n) |' in done.stdout and (folder / 'study' / 'learning_curve.svg').exists()
  bench = ('--batch_sizes=16', '--modes=epoch', '--steps=2', '--repeats=1', '--matmul_size=64', '--bandwidth_mib=1')
  elemnet_jax('benchmark', *bench, '--output=bench.json', cwd=folder)
  assert json.loads((folder / 'bench.json').read_text())['rows'][0]['mode'] == 'epoch'


def test_the_shipped_model_fine_tunes_on_a_csv_from_any_folder(tmp_path):
  from elemnet_jax.data import datasets

  table, _ = datasets.load_table('ssub')
  lines = [f'{formula},{value}' for formula, value in zip(table.inputs[:100], table.targets[:100])]
  (tmp_path / 'my.csv').write_text('formula,dHf\n' + '\n'.join(lines) + '\n')
  data = ('--config.dataset.name=my.csv', '--config.dataset.target=dHf', '--config.dataset.unit=eV/atom')
  elemnet_jax('finetune', '--pretrained=oqmd_fe', '--workdir=mine', *data, '--config.train.max_epochs=1', cwd=tmp_path)
  header, row = csv.reader(io.StringIO(elemnet_jax('predict', '--models=mine', '--formulas=NaCl', cwd=tmp_path).stdout))
  assert header[:2] == ['input', 'dHf (eV/atom)'] and float(row[1]) < -1


def test_a_command_run_again_reads_its_compiled_programs_back_and_gives_the_same_numbers(tmp_path):
  # The test run's own shared cache (conftest) is left out: the command keeps its programs where a user's would go.
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT_CACHE'))}
  env.pop('JAX_ENABLE_COMPILATION_CACHE', None)
  env['ELEMNET_JAX_XLA_CACHE'] = str(tmp_path / 'xla')

  def train(name):
    command = [*COMMAND, 'train', '--config=test', f'--workdir={name}', '--config.train.max_epochs=2']
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    programs = next(line for line in done.stderr.splitlines() if '] time: ' in line).split('; ')[-1]
    return json.loads((tmp_path / name / 'metrics.json').read_text())['test'], programs, done.stderr

  first, programs, _ = train('first')
  compiled = int(programs.split()[0])
  assert programs == f'{compiled} programs compiled, 0 read from the compilation cache' and compiled > 10
  (folder,) = (tmp_path / 'xla').iterdir()  # this CPU's
  assert folder.name.startswith('cpu-')
  # Three entries cut off, as by a command killed while writing them: the two largest, and one of a program
  # kept in several shapes (the others stay). One line each; compiled again; written anew.
  entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_size)
  names = [entry.name.rsplit('-', 2)[0] for entry in entries]
  shared = next(entry for entry, name in zip(entries, names) if names.count(name) > 1)
  for entry in [*entries[-2:], shared]:
    entry.write_bytes(entry.read_bytes()[:1000] if entry.stat().st_size > 1000 else b'cut')
  again, programs, stderr = train('again')
  assert programs == f'3 programs compiled, {compiled - 3} read from the compilation cache'
  assert stderr.count('could not be read; compiled again (1 cut-off entries removed)') == 3, stderr[-3000:]
  assert 'Error reading persistent' not in stderr and again == first
  assert train('repaired')[1] == f'0 programs compiled, {compiled} read from the compilation cache'
  env['ELEMNET_JAX_XLA_CACHE'] = 'off'
  assert train('off')[1] == f'{compiled} programs compiled, 0 read from the compilation cache'


_WHERE_PROGRAMS_GO = """
import json, os, sys
from elemnet_jax.training import compile_cache
found = {}
os.environ['JAX_ENABLE_COMPILATION_CACHE'] = 'false'  # JAX's own switch
found['jax off'] = compile_cache.enable()
del os.environ['JAX_ENABLE_COMPILATION_CACHE']
for name, chosen in (('off', 'off'), ('unmakeable', sys.argv[1] + '/file/xla')):
  os.environ['ELEMNET_JAX_XLA_CACHE'] = chosen
  found[name] = compile_cache.enable()
del os.environ['ELEMNET_JAX_XLA_CACHE']
found['default'] = compile_cache.enable()
import jax
found['jax'], found['started'] = jax.config.jax_compilation_cache_dir, os.environ['JAX_COMPILATION_CACHE_DIR']
found['again'] = compile_cache.enable()  # the folder now chosen is left alone
print(json.dumps({name: str(value) for name, value in found.items()}))
"""


def test_the_compiled_programs_go_to_the_data_cache_unless_chosen_or_turned_off(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT_CACHE'))}
  env.pop('JAX_ENABLE_COMPILATION_CACHE', None)
  env.pop('ELEMNET_JAX_XLA_CACHE', None)
  env['ELEMNET_JAX_CACHE'] = str(tmp_path / 'cache')
  (tmp_path / 'file').write_text('not a folder')
  command = [sys.executable, '-c', _WHERE_PROGRAMS_GO, str(tmp_path)]
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  found = json.loads(done.stdout.strip().splitlines()[-1])
  assert found['jax off'] == found['off'] == found['unmakeable'] == found['again'] == 'None'
  folder = Path(found['default'])
  assert folder.parent == tmp_path / 'cache' / 'xla' and folder.name.startswith('cpu-') and folder.is_dir()
  assert found['jax'] == found['started'] == str(folder)
  assert sorted(p.name for p in (tmp_path / 'cache' / 'xla').iterdir()) == [folder.name]  # nothing for the others


def test_the_experiments_modules_are_the_same_commands(trained):
  done = subprocess.run(
    [sys.executable, '-m', 'experiments.predict', f'--models={trained / "w"}', '--formulas=NaCl'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0 and done.stdout.splitlines()[1].startswith('NaCl,')


def test_help_lists_the_flags_and_every_config_field(tmp_path):
  done = elemnet_jax('train', '--help', cwd=tmp_path)
  assert '--workdir:' in done.stdout and '--config.train.learning_rate=0.0001' in done.stdout
  assert '--config.dataset.name=' in done.stdout
  done = elemnet_jax('study', '--config=paper', '--help', cwd=tmp_path)
  assert '--config.study.folds=0' in done.stdout and '--config.target.train.patience=50' in done.stdout
  overview = elemnet_jax(cwd=tmp_path, check=False)
  assert overview.returncode == 2 and all(name in overview.stdout for name in ('train', 'predict', 'fingerprint'))
  printed = elemnet_jax('finetune', '--pretrained=x', '--workdir=y', '--print_config', cwd=tmp_path)
  assert 'name: ssub' in printed.stdout and not (tmp_path / 'y').exists()


@pytest.mark.parametrize(
  'args, message',
  [
    (['train', '--workdir=', '--config=test'], '--workdir is empty'),  # else: the current folder
    (
      ['train', '--workdir=unused', '--config=test', '--config.train.learning_rat=1e-3'],
      "--config.train.learning_rat=1e-3: the config has no field 'learning_rat' (did you mean 'learning_rate'?)",
    ),
    (  # the same mistake with the default config
      ['train', '--workdir=unused', '--config.train.learning_rat=1e-3'],
      "--config.train.learning_rat=1e-3: the config has no field 'learning_rat' (did you mean 'learning_rate'?)",
    ),
    (['train', '--workdir=unused', '--config=test:bogus'], "unknown test config 'bogus'"),
    (['train', '--workdir=unused', '--config=nosuch'], '--config=nosuch: neither a named config'),
    (['train', '--workdir=unused', 'extra'], "unexpected argument 'extra'"),
    (['predict', '--models=', '--formulas=NaCl'], "--models='': name a finished workdir"),
    (['predict', '--models=absent', '--formulas=NaCl'], 'absent: no such workdir'),
    (['predict', '--models=absent', '--formulas=NaCl', '--coverage=2'], '--coverage=2.0: give a share between 0 and 1'),
    (
      ['train', '--workdir=unused', '--config=test', '--config.dataset.task=ranking'],
      "--config.dataset.task='ranking': use one of regression, classification",
    ),
    (['tran'], "unknown command 'tran'"),
  ],
  ids=[
    'empty workdir',
    'misspelt field',
    'misspelt field, default config',
    'unknown variant',
    'unknown config',
    'positional',
    'no models',
    'absent model',
    'coverage outside 0..1',
    'unknown task',
    'unknown command',
  ],
)
def test_mistakes_are_one_line_errors_with_status_2(tmp_path, args, message):
  assert_user_error(elemnet_jax(*args, cwd=tmp_path, check=False), message)
  assert not any(tmp_path.iterdir())  # nothing written, not even into the current folder


def test_a_bad_csv_row_is_one_line(tmp_path):
  (tmp_path / 'mine.csv').write_text('formula,energy\nFe2O3,-1.0\nQq2,1.0\n')
  flags = ('--config=test', '--config.dataset.name=mine.csv', '--config.dataset.target=energy', '--workdir=w')
  done = elemnet_jax('train', *flags, cwd=tmp_path, check=False)
  assert_user_error(done, "mine.csv: 1 invalid input row(s): row 3 ('Qq2')", '--config.dataset.skip_invalid=True')


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
  """SIGKILL mid-training, start again with the same workdir: same final metrics.json."""
  flags = [
    '--config=test',
    '--config.train.max_epochs=12',
    '--config.train.patience=12',
    '--config.train.batch_size=16',
  ]
  elemnet_jax('train', '--workdir=whole', *flags, cwd=tmp_path)
  workdir = tmp_path / 'killed'
  process = subprocess.Popen(
    [*COMMAND, 'train', f'--workdir={workdir}', *flags],
    cwd=tmp_path,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  checkpoints = workdir / 'checkpoints'
  while time.time() < deadline and process.poll() is None:
    if checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= 3 for p in checkpoints.iterdir()):
      break
    time.sleep(0.05)
  assert process.poll() is None, 'the run ended before it could be killed'
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  assert not (workdir / 'metrics.json').exists()
  again = elemnet_jax('train', f'--workdir={workdir}', *flags, cwd=tmp_path)
  assert 'resuming' in again.stderr and 'from epoch' in again.stderr  # not a fresh start
  whole = json.loads((tmp_path / 'whole' / 'metrics.json').read_text())
  resumed = json.loads((workdir / 'metrics.json').read_text())
  assert {**resumed, 'seconds': None} == {**whole, 'seconds': None}  # all but the timings


def test_a_corrupted_checkpoint_is_one_line_without_library_noise(tmp_path):
  flags = ['--config=test', '--config.train.max_epochs=2', '--workdir=w']
  elemnet_jax('train', *flags, cwd=tmp_path)
  for name in ('metrics.json', 'predictions_test.csv'):  # as if killed after the last checkpoint
    (tmp_path / 'w' / name).unlink()
  # Array chunks first (orbax leaves reads running that would print tracebacks around the line), then all.
  for chunks_only in (True, False):
    for file in (tmp_path / 'w' / 'checkpoints').rglob('*'):
      if file.is_file() and 'state' in file.parts and ('d' in file.parts or not chunks_only):
        file.write_bytes(b'garbage')
    done = elemnet_jax('train', *flags, cwd=tmp_path, check=False)
    assert_user_error(done, 'checkpoint cannot be restored')
    assert 'Event loop is closed' not in done.stderr
