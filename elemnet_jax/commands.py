"""The flags of each `elemnet-jax` command and the one library call it makes; only the chosen command's are defined."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags

from elemnet_jax.errors import UserError

FLAGS = flags.FLAGS


def _config(**fields):
  """The parsed config with `fields` set, resolved into typed values (`configs.resolve`: the one place where a
  config is read and checked); with --print_config, printed and the program ends."""
  from elemnet_jax import configs

  config = FLAGS.config
  for dotted, value in fields.items():
    *path, last = dotted.split('.')
    section = config
    for key in path:
      section = section[key]
    section[last] = value
  if FLAGS.print_config:
    print(config)
    sys.exit(0)
  if FLAGS.distributed:  # the coordinator from the flags, else from the environment (SLURM, Open MPI, Cloud TPU)
    from elemnet_jax.training import distributed

    distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed_timeout)
  elif FLAGS.coordinator or FLAGS.num_processes is not None or FLAGS.process_id is not None:
    raise UserError('--coordinator, --num_processes and --process_id need --distributed')
  return configs.resolve(config)


def _data_dir(*where: str) -> dict:
  """--data_dir as the config's fields (those named by `where`, e.g. 'data_dir' and 'source.data_dir')."""
  return {name: FLAGS.data_dir for name in where} if FLAGS.data_dir else {}


def _run_flags() -> list[str]:
  flags.DEFINE_string('workdir', None, 'Output folder (resumed if interrupted).', required=True)
  flags.DEFINE_string('data_dir', None, 'Data directory (overrides $ELEMNET_JAX_DATA).')
  flags.DEFINE_bool('overwrite', False, 'Replace what --workdir holds.')
  flags.DEFINE_bool(
    'distributed',
    False,
    'Join several processes into one data-parallel run (jax.distributed.initialize; with train.data_parallel).',
  )
  flags.DEFINE_string('coordinator', None, 'With --distributed: HOST:PORT of process 0 (else from the environment).')
  flags.DEFINE_integer('num_processes', None, 'With --distributed: how many processes (else from the environment).')
  flags.DEFINE_integer('process_id', None, 'With --distributed: this process, 0 .. num_processes-1 (0 writes).')
  flags.DEFINE_integer('distributed_timeout', 100, 'With --distributed: seconds of silence after which a peer is lost.')
  flags.DEFINE_integer('profile_steps', 0, 'Trace this many training steps with jax.profiler into WORKDIR/tensorboard.')
  return ['workdir', 'data_dir', 'overwrite', 'distributed', 'coordinator', 'num_processes', 'process_id'] + [
    'distributed_timeout',
    'profile_steps',
  ]


def train() -> Callable:
  from elemnet_jax.run import train_and_evaluate

  def main(argv):
    config = _config(**_data_dir('data_dir'))
    train_and_evaluate(config, FLAGS.workdir, overwrite=FLAGS.overwrite, profile_steps=FLAGS.profile_steps)

  return main


def finetune() -> Callable:
  flags.DEFINE_string(
    'pretrained',
    None,
    'Workdir of a finished run or a shipped model (oqmd_fe); several, comma-separated, form one ensemble.',
    required=True,
  )
  from elemnet_jax.run import train_and_evaluate

  def main(argv):
    config = _config(**{'transfer.pretrained': FLAGS.pretrained}, **_data_dir('data_dir'))
    train_and_evaluate(config, FLAGS.workdir, overwrite=FLAGS.overwrite, profile_steps=FLAGS.profile_steps)

  return main


def study() -> Callable:
  from elemnet_jax.study import run_study

  def main(argv):
    config = _config(**_data_dir('data_dir', 'source.data_dir'))
    run_study(config, FLAGS.workdir, overwrite=FLAGS.overwrite)

  return main


def _input_flags() -> list[str]:
  flags.DEFINE_list(
    'models',
    None,
    'Workdirs of finished runs or shipped models (oqmd_fe), comma separated (fingerprint: one).',
    required=True,
  )
  flags.DEFINE_string('input', None, 'CSV file with the inputs (its other columns are carried through).')
  flags.DEFINE_string('column', 'formula', 'Input column of --input (e.g. formula or smiles).')
  flags.DEFINE_list('formulas', None, 'Inputs (formulas or SMILES) given on the command line instead of --input.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --output file.')
  return ['models', 'input', 'column', 'formulas', 'overwrite']


def predict() -> Callable:
  flags.DEFINE_string('output', None, 'Output CSV (default or -: standard output).')
  flags.DEFINE_bool('fail_on_invalid', False, 'Stop with an error listing invalid inputs instead of reporting them.')
  flags.DEFINE_float('coverage', None, 'Add lower/upper columns: the calibrated interval of this coverage, e.g. 0.9.')
  flags.DEFINE_string('target', None, 'Column of --input with known values: log how the predictions score against it.')
  from elemnet_jax.predict import predict_file

  def main(argv):
    predict_file(
      FLAGS.models,
      input_csv=FLAGS.input,
      column=FLAGS.column,
      inputs=FLAGS.formulas,
      output=FLAGS.output,
      fail_on_invalid=FLAGS.fail_on_invalid,
      overwrite=FLAGS.overwrite,
      coverage=FLAGS.coverage,
      target=FLAGS.target,
    )

  return main


def fingerprint() -> Callable:
  flags.DEFINE_string(
    'output',
    None,
    'Output file: .npy (an array) or .csv (input, h1..hW, error); - is standard output (CSV).',
    required=True,
  )
  flags.DEFINE_integer('layer', 0, 'Hidden layer (1-based) whose activations to export; 0: the last.')
  flags.DEFINE_integer('member', 0, 'Ensemble member whose activations to export.')
  from elemnet_jax import predict, workdir

  def main(argv):
    if workdir.replaces(FLAGS.output) and not FLAGS.overwrite:
      raise UserError(f'{FLAGS.output}: already exists; pass --overwrite to replace it')
    texts, _, _, where = predict.read_inputs(FLAGS.input, FLAGS.column, FLAGS.formulas)
    if not texts:
      raise UserError(f'{where}: no inputs')
    features, errors = predict.fingerprint(FLAGS.models, texts, FLAGS.layer, FLAGS.member)
    predict.write_fingerprint(FLAGS.output, texts, features, errors)
    print(f'wrote {features.shape[0]} x {features.shape[1]} activations to {FLAGS.output}')

  return main


def benchmark() -> Callable:
  from elemnet_jax import benchmark
  from elemnet_jax.benchmark import report as benchmark_report

  batch_sizes = flags.DEFINE_list('batch_sizes', ['32', '1024'], 'Batch sizes to time.')
  flags.DEFINE_list('modes', list(benchmark.MODES), f'Modes to time, some of {", ".join(benchmark.MODES)}.')
  flags.DEFINE_integer('steps', 50, 'Minibatches per timed epoch (N = batch size * steps rows).')
  flags.DEFINE_integer('repeats', 5, 'Timed calls per row after warm-up, the median reported.')
  flags.DEFINE_integer('warmup', 1, 'Untimed calls before timing (the first one compiles).')
  flags.DEFINE_integer('members', 8, 'Ensemble size K of the ensemble and sequential rows.')
  flags.DEFINE_integer('ensemble_max_batch', 256, 'Time ensemble mode only at batch sizes up to this (0: all).')
  flags.DEFINE_integer(
    'full_epoch_rows',
    0,
    f'One epoch over this many rows too (0: off; {benchmark_report.OQMD_TRAIN_ROWS}: OQMD).',
  )
  full_sizes = flags.DEFINE_list('full_epoch_batch_sizes', ['32', '1024'], 'Batch sizes of the full epoch.')
  flags.DEFINE_integer('full_epoch_repeats', 1, 'Timed full epochs per batch size.')
  flags.DEFINE_integer('matmul_size', 0, 'Side of the peak matmul (0: 2048 on CPU, else 8192).')
  flags.DEFINE_integer('bandwidth_mib', 0, 'MiB of the bandwidth measurement (0: 256 on CPU, else 2048).')
  flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and the initial parameters.')
  flags.DEFINE_string('output', 'workdirs/benchmark.json', 'JSON report path ("": print only).')
  flags.DEFINE_integer('processes', 0, 'Time data-parallel scaling instead: 1 vs this many processes (1 device each).')
  flags.DEFINE_string(
    'model', 'elemnet', 'Model family to time, at its default config (elemnet, residual, transformer).'
  )

  def ints(flag) -> tuple[int, ...]:
    try:
      return tuple(int(value) for value in flag.value)
    except ValueError:
      raise UserError(f'--{flag.name} must be comma-separated integers, not {",".join(flag.value)}') from None

  def main(argv):
    if FLAGS.processes:
      import json
      from pathlib import Path

      from elemnet_jax import workdir
      from elemnet_jax.benchmark import scaling

      rows = scaling.run_scaling(FLAGS.processes, ints(batch_sizes)[-1], FLAGS.steps, FLAGS.repeats)
      print(scaling.format_scaling(rows, ints(batch_sizes)[-1]), end='')
      if FLAGS.output:  # beside the throughput report: NAME_scaling.json
        path = Path(FLAGS.output).with_name(Path(FLAGS.output).stem + '_scaling.json')
        path.parent.mkdir(parents=True, exist_ok=True)
        workdir.write_text(path, json.dumps(rows, indent=1))
        print(f'wrote {path}')
      return
    names = ('steps', 'repeats', 'warmup', 'members', 'ensemble_max_batch', 'full_epoch_rows', 'full_epoch_repeats')
    options = benchmark.BenchmarkOptions(
      batch_sizes=ints(batch_sizes),
      modes=tuple(FLAGS.modes),
      full_epoch_batch_sizes=ints(full_sizes),
      matmul_size=FLAGS.matmul_size,
      bandwidth_mib=FLAGS.bandwidth_mib,
      seed=FLAGS.seed,
      **{name: FLAGS[name].value for name in names},
    )
    report = benchmark.run_benchmark(options, benchmark.default_model(FLAGS.model))
    print(benchmark_report.format_report(report), end='')
    if FLAGS.output:
      json_path, md_path = benchmark_report.write_report(report, FLAGS.output)
      print(f'wrote {json_path} and {md_path}')

  return main


def define(command: str) -> tuple[Callable, list[str]]:
  """Defines `command`'s flags; (its main, the flag names it shows in --help)."""
  if command in ('train', 'finetune', 'study'):
    names = _run_flags() + (['pretrained'] if command == 'finetune' else [])
    return {'train': train, 'finetune': finetune, 'study': study}[command](), names
  if command in ('predict', 'fingerprint'):
    names = _input_flags()
    body = predict() if command == 'predict' else fingerprint()
    extra = ['output', 'fail_on_invalid', 'coverage'] if command == 'predict' else ['output', 'layer', 'member']
    return body, names + extra
  before = set(FLAGS)
  body = benchmark()
  return body, [name for name in FLAGS if name not in before]
