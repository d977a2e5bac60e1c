"""The README's Python API example runs as written."""

import re

from conftest import REPO


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
  section = (REPO / 'README.md').read_text().split('## Python API', 1)[1]
  example = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  assert 10 <= len(example.strip().splitlines()) <= 12
  monkeypatch.chdir(tmp_path)  # its workdirs land here
  scope = {}
  exec(compile(example, 'README.md', 'exec'), scope)
  assert scope['metrics']['test']['n'] > 100
  predicted = scope['predicted']
  assert predicted.errors == ['', '', "unknown element symbol 'Xx'"] and predicted.mean[0] < 0
  assert scope['features'].shape == (1, 16) and scope['model'].unit == 'eV/atom'
  assert scope['oqmd'].predict(['NaCl']).mean[0] < -1  # strongly bound
  assert {row['method'] for row in scope['rows']} == {'scratch', 'finetune', 'featurizer', 'head', 'direct'}
  assert 'eV/atom' in capsys.readouterr().out
