"""Retraining for chosen epochs: each member trained again, without validation, for the epochs its early
stopping kept, e.g. on the training and validation rows together."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from elemnet_jax.training import distributed, timing
from elemnet_jax.training.fit import FitOptions, check_finite, epoch_runner, select_members
from elemnet_jax.training.train import Members, Params, evaluation_params


def fit_epochs(
  members: Members,
  train,
  epochs: list[int],
  options: FitOptions,
  *,
  mesh=None,
  name='retrain',
  phases: timing.Phases | None = None,
) -> Params:
  """Trains member k for `epochs[k]` epochs with no validation; each member's evaluation parameters then.

  Early stopping's choice of epochs, applied to a run on more rows (training and validation rows).
  `train` as for `fit`; `phases` counts the epochs as 'train'.
  """
  phase = phases or timing.untimed
  if len(epochs) != members.count or min(epochs) < 0:
    raise ValueError(f'epochs {epochs} for {members.count} members: give each a count >= 0')
  run_epoch, states, x_train, y_train = epoch_runner(members, train, options, mesh)
  epochs_K, last = np.asarray(epochs), max(epochs, default=0)
  params = jax.tree.map(jnp.copy, evaluation_params(states))  # 0 epochs: the starting weights
  for epoch in range(1, last + 1):
    start_step = int(np.asarray(states.step).reshape(-1)[0])
    with phase('train'):
      states, losses_KxS = run_epoch(states, x_train, y_train)
      losses_KxS = np.asarray(losses_KxS)  # waits for the epoch
    check_finite(losses_KxS, name, epoch, start_step)
    if (epochs_K == epoch).any():
      params = select_members(epochs_K == epoch, evaluation_params(states), params)
    if epoch % options.train.log_every == 0 or epoch == last:
      logging.info('%s epoch %d/%d  train_loss %.4f', name, epoch, last, float(losses_KxS.mean()) * options.loss_scale)
  return distributed.local(params)  # this process's copy


def retrain_with_validation(
  start, rows, epochs: list[int], options: FitOptions, mesh=None, name: str = '', phases: timing.Phases | None = None
):
  """Member k trained again from its start (`start(n)`: the members as the early-stopped run began, the schedule
  counting n rows) on `rows` (training + validation rows) for `epochs[k]` epochs: their evaluation parameters.
  `phases` counts the epochs as 'train'."""
  n, tic = rows[0].shape[-2], time.perf_counter()  # x: [N, F], or [K, N, F] each member its own
  logging.info('retraining on %d training + validation rows for epochs %s', n, epochs)
  params = fit_epochs(start(n), rows, epochs, options, mesh=mesh, name=f'{name}/retrain', phases=phases)
  logging.info('retraining took %.1fs', time.perf_counter() - tic)
  return params
