"""Setting a run's outputs aside while another replaces it: what each interruption leaves."""

from elemnet_jax import workdir

NAMES = ('metrics.json', 'model')


def _run(directory, text):
  directory.mkdir(exist_ok=True)
  (directory / 'metrics.json').write_text(text)
  (directory / 'model').mkdir()
  (directory / 'model' / 'meta.json').write_text(text)


def test_a_finished_run_displaces_a_stale_set_aside_one(tmp_path):
  # A kill during the discard of replaced/ leaves a finished run beside it; the next overwrite must
  # set the finished run aside, not delete it as if it were an unfinished replacement.
  _run(tmp_path / 'replaced', 'old')
  _run(tmp_path, 'new')
  assert workdir.set_aside(tmp_path, NAMES, finished=True) == tmp_path / 'replaced'
  assert (tmp_path / 'replaced' / 'metrics.json').read_text() == 'new'
  assert (tmp_path / 'replaced' / 'model' / 'meta.json').read_text() == 'new'
  assert not (tmp_path / 'metrics.json').exists()


def test_an_unfinished_replacement_is_deleted_and_the_set_aside_run_kept(tmp_path):
  _run(tmp_path / 'replaced', 'old')
  (tmp_path / 'model').mkdir()
  workdir.set_aside(tmp_path, NAMES)
  assert not (tmp_path / 'model').exists()
  assert (tmp_path / 'replaced' / 'metrics.json').read_text() == 'old'


def test_a_set_aside_cut_short_is_completed(tmp_path):
  _run(tmp_path, 'old')
  (tmp_path / 'replaced.partial').mkdir()  # killed after moving metrics.json, before model/
  (tmp_path / 'metrics.json').rename(tmp_path / 'replaced.partial' / 'metrics.json')
  workdir.set_aside(tmp_path, NAMES)
  assert (tmp_path / 'replaced' / 'metrics.json').read_text() == 'old'
  assert (tmp_path / 'replaced' / 'model' / 'meta.json').read_text() == 'old'
  workdir.discard_set_aside(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_nothing_to_set_aside(tmp_path):
  assert workdir.set_aside(tmp_path, NAMES) is None
  assert list(tmp_path.iterdir()) == []


def test_writing_an_output_leaves_the_users_other_files_alone(tmp_path):
  # predict --input=out.csv.tmp --output=out.csv must not consume its own input.
  (tmp_path / 'out.csv.tmp').write_text('formula\nNaCl\n')
  workdir.write_text(tmp_path / 'out.csv', 'new')
  assert (tmp_path / 'out.csv').read_text() == 'new'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out.csv', 'out.csv.tmp']
  assert (tmp_path / 'out.csv.tmp').read_text() == 'formula\nNaCl\n'
