"""Why a network learns nothing: dead ReLU units per layer, and validation MAE against the training median.

`dead_units` measures a trained (or training) network; `probe` trains one config on a subsample for
a few epochs and records both as it goes, within the first epoch too, so recipes can be compared
cheaply before a long pretraining (docs/results.md, "Why the band gap source collapses").
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from elemnet_jax import featurizers, inputs, run, targets
from elemnet_jax.configs.schema import RunConfig
from elemnet_jax.errors import UserError
from elemnet_jax.models import heads
from elemnet_jax.training import guard
from elemnet_jax.training.train import epoch_order, make_predict, make_train_step, predict_in_batches


def layer_outputs(model, layers: int) -> list:
  """One compiled `predict(params_K, x) -> [K, B, width]` per hidden layer 1..`layers` (for `dead_units`)."""
  return [make_predict(model, hidden_layer=layer) for layer in range(1, layers + 1)]


def dead_units(outputs: list, params, x: np.ndarray) -> list[float]:
  """Per hidden layer, the share of its units that are zero on every row of `x` (a dead ReLU).

  `outputs` from `layer_outputs`; `params` with a leading member axis [K, ...]: member 0 is measured.
  """
  shares = []
  for predict in outputs:
    activations = predict_in_batches(predict, params, x)[0]  # [N, width]
    shares.append(float(np.mean(np.all(activations <= 0, axis=0))))
  return shares


@dataclasses.dataclass
class Probe:
  """What `probe` saw: per mark (a step count), the dead share per layer; per epoch, validation against the median."""

  name: str
  steps: list[int] = dataclasses.field(default_factory=list)
  dead: list[list[float]] = dataclasses.field(default_factory=list)  # [marks][layers]
  val_mae: list[float] = dataclasses.field(default_factory=list)  # per epoch, target units
  prediction_std: list[float] = dataclasses.field(default_factory=list)
  baseline_mae: float = float('nan')  # the training median's, on the same validation rows
  target_std: float = float('nan')
  seconds: float = 0.0
  steps_per_epoch: int = 0


def _subsample(parts: dict, sizes: dict, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {
    name: part.take(np.sort(rng.choice(len(part), min(sizes[name], len(part)), replace=False)))
    for name, part in parts.items()
    if name in sizes
  }


def subsample(config: RunConfig, n_train: int, n_val: int) -> dict:
  """`n_train` training and `n_val` validation examples of the config's dataset and split, drawn with its seed."""
  if targets.several(config.dataset):
    raise UserError(f'--config.dataset.target={config.dataset.target!r}: diagnose probes one target; name one column')
  return _subsample(inputs.split_parts(config), {'train': n_train, 'val': n_val}, config.seed)


def probe(config: RunConfig, name: str, parts: dict, epochs: int, marks: int = 4) -> Probe:
  """Trains `config` (member 0) on `parts` (from `subsample`) for `epochs` epochs, as `train` would.

  The schedule (warm-up, cosine) counts `epochs`; dead units are measured on 2,048 training rows
  at the start, `marks` times in the first epoch and after each epoch.
  """
  config = config.replace({'train.max_epochs': epochs})
  train, model_config, n_train = config.train, config.model, len(parts['train'])
  description = featurizers.build(config.featurizer.to_dict()).description()
  scaling = inputs.fit_target_scaling(parts['train'].y, train.target_scaling, config.transfer, head=model_config.head)
  made = inputs.make_inputs(parts, description, inputs.fit_feature_scaling(parts['train'].x, config.features), scaling)
  members = run.build(model_config, train, made.feature_scaling.width, n_train, seeds=[config.seed])
  state = jax.tree.map(lambda a: a[0], members.states)
  step = jax.jit(make_train_step(members.model, members.optimizer, train.loss))
  x, y = made.x['train'], made.y['train']
  sample = x[:2048]
  judgement = guard.judge(parts['train'].y, parts['val'].y, np.full(len(parts['val']), np.median(parts['train'].y)))
  per_epoch = train.steps_per_epoch(n_train)
  result = Probe(name, baseline_mae=judgement.baseline_mae, target_std=judgement.target_std, steps_per_epoch=per_epoch)
  predict = make_predict(members.model)
  first_marks = {max(1, round(per_epoch * (k + 1) / marks)) for k in range(marks)}

  outputs = layer_outputs(members.model, len(model_config.hidden_sizes()))

  def mark(state, steps):
    result.steps.append(steps)
    result.dead.append(dead_units(outputs, jax.tree.map(lambda a: a[None], state.params), sample))

  tic = time.perf_counter()
  mark(state, 0)
  for epoch in range(1, epochs + 1):
    rng, index_SxB, mask_SxB = epoch_order(state.rng, len(y), train.batch_size)
    state = state.replace(rng=rng)
    for s in range(index_SxB.shape[0]):
      index = np.asarray(index_SxB[s])
      state, _ = step(state, x[index], y[index], np.asarray(mask_SxB[s]))
      if epoch == 1 and s + 1 in first_marks and s + 1 != per_epoch:
        mark(state, s + 1)
    mark(state, epoch * per_epoch)
    params = jax.tree.map(lambda a: a[None], state.params)
    scaling = made.target_scaling
    raw = predict_in_batches(predict, params, made.x['val'])  # the head's prediction (a hurdle's product)
    prediction = heads.decode(model_config.head, raw, scaling.shift, scaling.scale).prediction()[0]
    judged = guard.judge(parts['train'].y, parts['val'].y, prediction)
    result.val_mae.append(judged.mae)
    result.prediction_std.append(judged.prediction_std)
  result.seconds = time.perf_counter() - tic
  return result


def summary_rows(probes: list[Probe]) -> list[str]:
  """A markdown table: validation MAE per epoch against the median, the predictions' spread, dead units."""
  lines = [
    '| recipe | val MAE by epoch | median baseline | pred. std / target std (last) '
    '| dead units, all layers: start -> end of epoch 1 -> last | worst layer (last) | s |',
    '|---|---|---|---|---|---|---|',
  ]
  for p in probes:
    first = p.steps.index(p.steps_per_epoch)
    dead = [float(np.mean(d)) for d in p.dead]
    worst = int(np.argmax(p.dead[-1]))
    lines.append(
      f'| {p.name} | {" ".join(f"{v:.4f}" for v in p.val_mae)} | {p.baseline_mae:.4f} | '
      f'{p.prediction_std[-1] / p.target_std:.3f} | {dead[0]:.0%} -> {dead[first]:.0%} -> {dead[-1]:.0%} | '
      f'layer {worst + 1}: {p.dead[-1][worst]:.0%} | {p.seconds:.0f} |'
    )
  return lines
