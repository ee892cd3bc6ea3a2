"""The optimisation loop shared by the methods that train with minibatches of fresh samples."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn


def optimize(model: nn.Module, opt: torch.optim.Optimizer, batch_loss: Callable[[], torch.Tensor], *,
             steps: int, ctx, desc: str, log_every: int, prefix: str = "",
             sched: Optional[torch.optim.lr_scheduler.LRScheduler] = None, grad_clip: Optional[float] = None,
             on_log: Optional[Callable[[int], dict]] = None,
             after_step: Optional[Callable[[int], bool]] = None) -> tuple[float, int]:
    """Train ``model`` for ``steps`` steps.

    Each step: ``batch_loss()`` (draws a batch, returns its loss), backward, optional gradient-norm
    clipping, optimizer step, scheduler step. Every ``log_every`` steps (and at the last) logs the running
    mean loss since the previous log as ``<prefix>train_loss`` (and the learning rate as ``<prefix>lr``
    when there is a scheduler), plus whatever ``on_log(step)`` returns (e.g. a test loss).
    ``after_step(step)`` runs after every step but the last (evaluation curves); returning True stops
    training early. A NaN or infinite loss raises ``FloatingPointError``. Returns the last loss and the steps done.
    """
    loss_acc, n_acc, lv, step = 0.0, 0, float("nan"), 0
    with ctx.progress(total=steps, desc=desc) as bar:
        for step in range(1, steps + 1):
            loss = batch_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            lv = loss.item()
            if not math.isfinite(lv):
                raise FloatingPointError(f"{desc}: loss became {lv} at step {step}")
            loss_acc, n_acc = loss_acc + lv, n_acc + 1
            bar.update(1, loss=lv)
            if step % log_every == 0 or step == steps:
                logged = {f"{prefix}train_loss": loss_acc / n_acc}
                if sched is not None:
                    logged[f"{prefix}lr"] = sched.get_last_lr()[0]
                ctx.log(step, **logged, **(on_log(step) if on_log else {}))
                loss_acc, n_acc = 0.0, 0
            if after_step is not None and step != steps and after_step(step):
                break
    return lv, step
