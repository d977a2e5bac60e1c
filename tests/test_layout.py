"""The library's shape: small modules and functions, and imports that only go down the layers."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'elemnet_jax'
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# Lowest first: a module may import only modules listed before it.
LAYERS = [
  'errors',
  'outputs',
  'machine',
  'lock',
  'interrupts',
  'migrations',
  'workdir',
  'metrics',
  'calibration',
  'ridge',
  'models.layers',
  'models.heads',
  'models.elemnet',
  'models.residual',
  'models.transformer',
  'models',
  'featurizers.composition',
  'featurizers.estate',
  'featurizers',
  'configs.values',
  'configs.schema',
  'configs.study_schema',
  'data.readers',
  'data.fetch',
  'data.crabnet',
  'data.element_vectors',
  'data.datasets',
  'data',
  'model_data',
  'training',
  'training.distributed',
  'training.timing',
  'training.compile_cache',
  'training.losses',
  'training.guard',
  'training.optimizer',
  'training.train',
  'training.fit',
  'training.retrain',
  'training.history',
  'training.events',
  'training.checkpoint',
  'pretrained',
  'transfer',
  'tasks',
  'scoring',
  'targets',
  'inputs',
  'predict',
  'run',
  'diagnose',
  'study.plan',
  'study.report',
  'study.sources',
  'study.choice',
  'study.results',
  'study',
  'benchmark.synthetic',
  'benchmark.report',
  'benchmark',
  'benchmark.scaling',
  'configs.default',
  'configs.oqmd',
  'configs.finetune',
  'configs.paper',
  'configs.demo',
  'configs.porphyrin_tl',
  'configs.test',
  'configs',
  'api',
  'commands',
  'cli',
]


def _modules() -> dict[str, Path]:
  found = {}
  for path in PACKAGE.rglob('*.py'):
    parts = path.relative_to(PACKAGE).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    found[name or '__init__'] = path
  return found


def _imports(path: Path) -> set[str]:
  """The elemnet_jax modules `path` imports (module-level and inside functions)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('elemnet_jax'):
      base = node.module.removeprefix('elemnet_jax').lstrip('.')
      for alias in node.names:
        candidate = f'{base}.{alias.name}' if base else alias.name
        names.add(candidate if candidate in LAYERS else base)
    elif isinstance(node, ast.Import):
      names |= {a.name.removeprefix('elemnet_jax.') for a in node.names if a.name.startswith('elemnet_jax.')}
  return {name for name in names if name}


def test_every_module_has_a_layer():
  assert sorted(set(_modules()) - {'__init__'}) == sorted(LAYERS)


@pytest.mark.parametrize('name', LAYERS)
def test_imports_only_go_down(name):
  below = set(LAYERS[: LAYERS.index(name)])
  upward = _imports(_modules()[name]) - below - {name}
  assert not upward, f'{name} imports {sorted(upward)}, which are not below it'


def test_modules_and_functions_are_small():
  too_long = []
  for name, path in _modules().items():
    lines = path.read_text().splitlines()
    if len(lines) > MAX_MODULE_LINES:
      too_long.append(f'{name}: {len(lines)} lines')
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          too_long.append(f'{name}.{node.name}: {length} lines')
  assert not too_long, too_long
