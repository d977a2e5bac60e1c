"""`study.choose_source`: one study per source, the source each fold's validation prefers kept."""

import json

from conftest import config_with, user_error

from elemnet_jax import study


def _choice(path, sources, overwrite=False):
  fields = {
    'study.pretrained': ','.join(map(str, sources)),
    'study.choose_source': True,
    'study.methods': ('scratch', 'finetune'),
    'study.freeze_layers': (0,),
  }
  rows = study.run_study(config_with('test:study', fields), path, overwrite=overwrite)
  return rows, json.loads((path / 'choice.json').read_text())


def test_each_fold_and_size_keeps_the_source_with_the_lowest_validation_mae(pretrained, pretrained_seed1, tmp_path):
  rows, record = _choice(tmp_path / 'choice', [pretrained, pretrained_seed1])
  assert record['finished'] and record['sources'] == {'source_0': str(pretrained), 'source_1': str(pretrained_seed1)}
  assert {row['train_fraction'] for row in rows} == {0.5, 1.0}
  per_source = [json.loads((tmp_path / 'choice' / f'source_{i}' / 'results.json').read_text()) for i in (0, 1)]
  assert {r['method'] for r in per_source[0]['runs']} == {'scratch', 'finetune'}
  assert {r['method'] for r in per_source[1]['runs']} == {'finetune'}  # scratch is the same for every source
  for row in rows:
    scores = row['by_source']
    assert row['chosen'] == min(scores, key=lambda name: scores[name]['val_mae'])
    assert row['test_mae'] == scores[row['chosen']]['test_mae']
    for i, runs in enumerate(per_source):
      seeds = [
        r
        for r in runs['runs']
        if r['method'] == 'finetune' and not r['ensemble'] and r['train_fraction'] == row['train_fraction']
      ]
      name = str((pretrained, pretrained_seed1)[i])
      assert abs(scores[name]['val_mae'] - sum(r['val_mae'] for r in seeds) / len(seeds)) < 1e-12
  report = (tmp_path / 'choice' / 'choice.md').read_text()
  assert 'chosen: test MAE' in report and 'scratch' in report
  user_error(lambda: _choice(tmp_path / 'choice', [pretrained, pretrained_seed1]), 'holds a finished study')
  (tmp_path / 'choice' / 'choice.json').unlink()  # as if interrupted after its studies: they are read, not rerun
  again, _ = _choice(tmp_path / 'choice', [pretrained, pretrained_seed1])
  assert again == rows


def test_choosing_needs_two_different_sources(pretrained, tmp_path):
  user_error(lambda: _choice(tmp_path / 'one', [pretrained]), 'study.choose_source=True needs two or more sources')
  user_error(lambda: _choice(tmp_path / 'twice', [pretrained, pretrained]), 'names a source twice')
