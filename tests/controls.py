"""Learning checks against a control instead of a margin tuned on one machine.

The control is the same run at learning rate 0: same seed, same batches, same
augmentation, frozen parameters. Training must bring the last epoch's loss
below the control's last epoch by more than the control's own spread over its
epochs (how far sampling alone moves an epoch's mean loss) and by at least
MIN_GAIN of the control's loss (a run that sees the same batches every epoch
has no spread)."""
MIN_GAIN = 0.05
LR0 = ("OPTIM.LR", "0.0", "OPTIM.WARMUP_CONS_LR", "0.0")


def learned(trained, control):
    """(ok, message) for per-epoch mean losses of a run and its LR-0 control."""
    trained, control = list(trained), list(control)
    assert len(trained) == len(control) >= 2, (trained, control)
    noise = max(max(control) - min(control), MIN_GAIN * control[-1])
    gain = control[-1] - trained[-1]
    msg = (f"last-epoch loss {trained[-1]:.4f} vs {control[-1]:.4f} at lr 0: gain {gain:.4f}, "
           f"needed {noise:.4f}; trained {trained}, control {control}")
    return gain > noise, msg


def assert_learned(trained, control):
    ok, msg = learned(trained, control)
    assert ok, msg
    return msg


def epoch_losses(trainer):
    """Mean training loss of each epoch of ``trainer.train()`` (a built trainer)."""
    per_epoch = {}
    step = trainer.forward_backward

    def recorded(batch):
        out = step(batch)
        per_epoch.setdefault(trainer.epoch, []).append(out["loss"])
        return out

    trainer.forward_backward = recorded
    trainer.train()
    return [sum(v) / len(v) for _, v in sorted(per_epoch.items())]
