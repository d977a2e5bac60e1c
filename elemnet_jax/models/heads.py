"""Output heads: what a network's last layer gives per row, how it trains and how it is read.

`model.head` chooses one for every family (the family's last layer calls `output_layer`):

- `point` (the default): one number, the prediction.
- `mean_variance`: a mean and a std (softplus of the second output, plus a floor), trained with the
  Gaussian negative log-likelihood; the model's own std travels with every prediction, and an ensemble
  combines its members as a mixture (mean of the means; variance: mean of the variances plus the
  means' spread).
- `hurdle`, for targets that are zero or positive with many exact zeros (band gaps): a logit of
  P(target != 0), trained with sigmoid cross-entropy on every row, and a positive regressor (softplus),
  trained with the run's loss (mae, huber or mse) on the nonzero rows. The prediction is the
  regressor times P(nonzero) ('expected') or the regressor where P(nonzero) > 0.5 and 0 elsewhere
  ('gate'): the run chooses on its validation rows (meta.json `hurdle_rule`). Its target scaling never
  shifts, so that zero stays zero.

Outputs are read in target units by `decode`; `Outputs.prediction` gives the [K, N] predictions the
rest of the library scores, whatever the head.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from elemnet_jax.errors import UserError
from elemnet_jax.models import layers

HEADS = ('point', 'mean_variance', 'hurdle')
WIDTHS = {'point': 1, 'mean_variance': 2, 'hurdle': 2}
RULES = ('expected', 'gate')
STD_FLOOR = 1e-3  # the mean-variance head's smallest std, in the model's (scaled) target units
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# train.loss values each head accepts (mean_variance trains with nll: the default 'mae' reads as not set).
LOSSES = {'mean_variance': ('nll', 'mae'), 'hurdle': ('mae', 'huber', 'mse')}


def check(head: str) -> str:
  if head not in HEADS:
    raise ValueError(f'head={head!r}: use one of {", ".join(HEADS)}')
  return head


def check_width(head: str, outputs: int) -> None:
  """A head other than 'point' models one target."""
  if head != 'point' and outputs != 1:
    raise ValueError(f'head {head!r} models one target, not {outputs}: use head point with several targets')


def output_layer(head: str, x: jax.Array, name: str, outputs: int = 1) -> jax.Array:
  """The last layer, inside a family's compact call: [B] for 'point' (as it always was; [B, outputs] for
  several targets), else [B, 2]."""
  if head == 'point':
    return layers.output_layer(x, outputs, name)
  return nn.Dense(WIDTHS[head], name=name)(x)


def std_of(raw: jax.Array) -> jax.Array:
  """The mean-variance head's std from its second output (model units)."""
  return jax.nn.softplus(raw) + STD_FLOOR


def loss(head: str, regression, output: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example training loss of a 'mean_variance' or 'hurdle' output [B, 2] against targets [B] (model units).

  `regression(prediction, target)`: the run's per-example regression loss (the hurdle's regressor).
  """
  if head == 'mean_variance':
    std = std_of(output[..., 1])
    return jnp.log(std) + 0.5 * jnp.square((target - output[..., 0]) / std) + HALF_LOG_2PI
  if head == 'hurdle':
    nonzero = (target != 0).astype(output.dtype)
    logit, positive = output[..., 0], jax.nn.softplus(output[..., 1])
    cross_entropy = jnp.logaddexp(0.0, logit) - nonzero * logit
    return cross_entropy + nonzero * regression(positive, target)
  raise ValueError(f'head {head!r} has no loss of its own')


def _softplus(x: np.ndarray) -> np.ndarray:
  return np.logaddexp(0.0, x)


@dataclasses.dataclass(frozen=True)
class Outputs:
  """A model's outputs per member, in target units, [K, N] each: the values its head gives."""

  head: str
  mean: np.ndarray  # point: the prediction; mean_variance: the mean; hurdle: the positive regressor's value
  std: np.ndarray | None = None  # mean_variance: the model's own std
  p_nonzero: np.ndarray | None = None  # hurdle: P(target != 0)

  def prediction(self, rule: str = '') -> np.ndarray:
    """[K, N]: the head's point prediction; a hurdle's by `rule` ('' reads as 'expected')."""
    if self.head != 'hurdle':
      return self.mean
    if (rule or 'expected') == 'expected':
      return self.p_nonzero * self.mean
    if rule == 'gate':
      return np.where(self.p_nonzero > 0.5, self.mean, 0.0)
    raise ValueError(f'hurdle rule {rule!r} is not one of {list(RULES)}')

  @property
  def own_std(self) -> bool:
    return self.std is not None

  def spread(self) -> np.ndarray | None:
    """[N]: the mixture std of the members' Gaussians (mean_variance); None for heads without a std."""
    return None if self.std is None else mixture(self.mean, self.std)[1]


def mixture(mean_KxN: np.ndarray, std_KxN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [N], std [N]) of an equal-weight mixture of the members' Gaussians."""
  mean_KxN, std_KxN = np.asarray(mean_KxN, np.float64), np.asarray(std_KxN, np.float64)
  mean = mean_KxN.mean(axis=0)
  variance = np.mean(np.square(std_KxN) + np.square(mean_KxN), axis=0) - np.square(mean)
  return mean, np.sqrt(np.maximum(variance, 0.0))


def decode(head: str, raw: np.ndarray, shift: float = 0.0, scale: float = 1.0) -> Outputs:
  """`Outputs` in target units from the network's raw outputs ([K, N] for 'point', else [K, N, 2])."""
  if head == 'point':
    return Outputs(head, raw * scale + shift)
  raw = np.asarray(raw)
  if head == 'mean_variance':
    return Outputs(head, raw[..., 0] * scale + shift, np.asarray(std_of(raw[..., 1])) * scale)
  if head == 'hurdle':  # its scaling never shifts (`tasks.head_scaling`)
    p_nonzero = 1.0 / (1.0 + np.exp(-raw[..., 0].astype(np.float64)))
    return Outputs(head, _softplus(raw[..., 1].astype(np.float64)) * scale, p_nonzero=p_nonzero)
  raise ValueError(f'head {head!r} is not one of {list(HEADS)}')


def validation_predictions(head: str, raw: np.ndarray, target: np.ndarray) -> np.ndarray:
  """[K, N] in model units, what early stopping and the baseline guard score: a hurdle member's by the rule
  better on `target`, a rule whose predictions are constant (a gate that is shut for every row) only when both are."""
  outputs = decode(head, raw)
  if head != 'hurdle':
    return outputs.mean
  candidates = np.stack([outputs.prediction(rule) for rule in RULES])  # [R, K, N]
  errors = np.abs(candidates - np.asarray(target)).mean(axis=-1)  # [R, K]
  constant = candidates.std(axis=-1) <= 1e-9
  errors = np.where(constant & ~constant.all(axis=0), np.inf, errors)
  return np.take_along_axis(candidates, errors.argmin(axis=0)[None, :, None], axis=0)[0]


def choose_rule(outputs: Outputs, target: np.ndarray) -> tuple[str, dict]:
  """A hurdle's rule with the lower validation MAE of the members' mean, and each rule's; ('', {}) for other heads."""
  if outputs.head != 'hurdle':
    return '', {}
  scores = {rule: float(np.abs(outputs.prediction(rule).mean(axis=0) - target).mean()) for rule in RULES}
  return min(RULES, key=scores.get), scores


def summary(test: Outputs, target: np.ndarray, rule: str, by_rule: dict) -> dict:
  """metrics.json's `head`: a hurdle's rule and its zero classifier on test; a mean-variance head's std against
  its errors on test (Spearman correlation of the std with the absolute error of the members' mean)."""
  target = np.asarray(target, np.float64)
  entry: dict = {'name': test.head}
  if test.head == 'hurdle':
    p_zero, zero = 1.0 - test.p_nonzero.mean(axis=0), target == 0
    entry.update(rule=rule, val_mae_by_rule={k: round(v, 6) for k, v in by_rule.items()})
    entry.update(
      test_zero_share=round(float(zero.mean()), 4),
      test_p_zero_on_zero_rows=round(float(p_zero[zero].mean()), 4) if zero.any() else None,
      test_p_zero_on_nonzero_rows=round(float(p_zero[~zero].mean()), 4) if (~zero).any() else None,
    )
  if test.head == 'mean_variance':
    mean, std = mixture(test.mean, test.std)
    entry.update(
      test_mean_std=round(float(std.mean()), 6), test_std_error_spearman=round(spearman(std, np.abs(mean - target)), 4)
    )
  return entry


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation (ties broken by order; NaN for fewer than 2 rows)."""
  if len(a) < 2:
    return float('nan')
  ranks = [np.argsort(np.argsort(v)).astype(np.float64) for v in (a, b)]
  return float(np.corrcoef(*ranks)[0, 1])


def changed(source_model: dict, model_config) -> bool:
  """Whether a fine-tune trains another head than its source's (its output layer is then drawn afresh)."""
  return source_model.get('head', 'point') != getattr(model_config, 'head', 'point')


def resolve(head: str, loss: str, task: str) -> str:
  """The loss a run of `head` trains with; ValueError for a `train.loss` that contradicts the head, its message
  naming fields after '{at}' (where the run's config sits: `configs.values.Invalid`)."""
  if head not in HEADS:
    raise ValueError(f'{{at}}model.head={head!r}: use one of {", ".join(HEADS)}')
  if head != 'point' and task == 'classification':
    raise ValueError(f'{{at}}model.head={head}: a classifier has one logit output; use {{at}}model.head=point')
  if head == 'point':
    if loss == 'nll':
      raise ValueError('{at}train.loss=nll is the loss of {at}model.head=mean_variance')
    return loss
  if loss not in LOSSES[head]:
    raise ValueError(
      f'{{at}}train.loss={loss} contradicts {{at}}model.head={head}: it trains with '
      f'{"the Gaussian negative log-likelihood (nll)" if head == "mean_variance" else "mae, huber or mse"}'
    )
  return 'nll' if head == 'mean_variance' else loss


def check_targets(head: str, y_train: np.ndarray, where: str) -> None:
  """The hurdle head models targets that are zero or positive: a one-line UserError otherwise."""
  if head != 'hurdle':
    return
  negative = int(np.sum(np.asarray(y_train) < 0))
  if negative:
    raise UserError(
      f'{where}: --config.model.head=hurdle models targets that are zero or positive; '
      f'{negative} training targets are negative'
    )


def meta(rule: str) -> dict:
  """What meta.json keeps of a head beyond the model's fields: a hurdle's rule."""
  return {'hurdle_rule': rule} if rule else {}
