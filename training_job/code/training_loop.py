"""Training the ensemble: each member (model.Net) learns alone, from its own seed, with
Nesterov SGD, label smoothing, a warm-up-then-decay learning rate and the augmentations
the hyperparameters name; on the CPU each member trains in a process of its own (`fit`).
The recipe is train.py's to explain; this is its loop, top to bottom."""

from __future__ import annotations

import copy
import math
import multiprocessing
import os
import random
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import model as model_lib
import numpy as np
import torch
from data import Split, augment
from hyperparameters import Hyperparameters
from metrics import History
from torch import nn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # warn_only: a few CUDA kernels (max-pool backward) have no deterministic version.
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class MemberResult:
    """What one member's training hands back (plain arrays: they cross a process boundary)."""

    state: dict[str, np.ndarray]
    loss: list[float]
    train_accuracy: list[float]
    val_logits: np.ndarray  # (epochs, val images, classes), eval mode, temperature 1
    seconds: list[float]


def member_seed(seed: int, index: int) -> int:
    """Member `index`'s own seed: its initialisation, batch order and augmentation differ
    from every other member's, and do not depend on how many members run or where."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def fit(
    hp: Hyperparameters,
    train: Split,
    val: Split,
    device: torch.device,
    progress: bool = True,
) -> tuple[model_lib.Net, model_lib.ModelConfig, History]:
    """Train the ensemble on `train`, watching `val`; returns the net, its config, the history.

    The members share nothing while they train (each learns from its own loss), so on the
    CPU each trains in its own process, with this process's torch threads divided among
    them: one thread per process is what two cores run fastest (two threads of one process
    on two busy cores wait on each other, docs/benchmarks.md). One process per member,
    even with more members than cores: three members on two cores finish in 1.5 members'
    time, not 2. On a GPU, or with one thread, they train one after another here.
    """
    pixels = train.images.reshape(-1, 3) / 255.0
    config = model_lib.ModelConfig(
        classes=hp.classes,
        mean=pixels.mean(0).tolist(),
        std=pixels.std(0).tolist(),
        widths=list(hp.widths),
        members=hp.members,
        tta_flip=hp.tta_flip,
        tta_translate=hp.tta_translate,
    )
    threads = torch.get_num_threads()
    jobs = [(hp, config, train, val, index, device, progress) for index in range(hp.members)]
    if device.type == "cpu" and hp.members > 1 and threads > 1:
        # spawn, not fork: a forked copy of a process that has run torch's thread pool
        # can deadlock in it.
        with ProcessPoolExecutor(
            hp.members,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_member_process,
            initargs=(max(1, threads // hp.members), os.getpid()),
        ) as pool:
            results = list(pool.map(fit_member, *zip(*jobs, strict=True)))
    else:
        results = [fit_member(*job) for job in jobs]

    net = model_lib.build_model(config)
    for member, result in zip(net.members, results, strict=True):
        member.load_state_dict(
            {name: torch.from_numpy(value) for name, value in result.state.items()}
        )
    net = model_lib.to_fast_layout(net).eval()
    history = ensemble_history(results, val.labels)
    if progress:
        print(
            f"ensemble of {hp.members}: val_acc {history.val_accuracy[-1]:.4f} "
            f"val_loss {history.val_loss[-1]:.4f}",
            flush=True,
        )
    return net, config, history


def start_member_process(threads: int, parent: int) -> None:
    """Set a member process's torch threads, and end it if train.py ends first (killed, or
    stopped by its runner): an orphan would go on training for minutes."""
    torch.set_num_threads(threads)

    def exit_when_orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


def ensemble_history(results: list[MemberResult], val_labels: np.ndarray) -> History:
    """The ensemble's curves: its validation accuracy and loss per epoch from the mean of
    the members' logits (what the ensemble predicts), the training loss and accuracy as
    the members' mean, the epoch time as the slowest member's."""
    history = History()
    logits = torch.from_numpy(np.mean([result.val_logits for result in results], axis=0))
    labels = torch.from_numpy(val_labels)
    for epoch, epoch_logits in enumerate(logits, start=1):
        history.epoch.append(epoch)
        history.loss.append(float(np.mean([result.loss[epoch - 1] for result in results])))
        history.train_accuracy.append(
            float(np.mean([result.train_accuracy[epoch - 1] for result in results]))
        )
        history.val_accuracy.append(float((epoch_logits.argmax(1) == labels).float().mean()))
        history.val_loss.append(float(nn.functional.cross_entropy(epoch_logits, labels)))
        history.seconds.append(max(result.seconds[epoch - 1] for result in results))
    return history


def fit_member(
    hp: Hyperparameters,
    config: model_lib.ModelConfig,
    train: Split,
    val: Split,
    index: int,
    device: torch.device,
    progress: bool,
) -> MemberResult:
    """Train ensemble member `index` alone, as `config` describes it."""
    seed = member_seed(hp.seed, index)
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    mixup_rng = np.random.default_rng(seed)
    net = model_lib.build_model(replace(config, members=1))
    train_x = model_lib.to_tensor(train.images, config)
    net.init_whitening(train_x)
    net = net.to(device, memory_format=torch.channels_last)
    train_y = torch.from_numpy(train.labels)
    val_x = model_lib.to_tensor(val.images, config).to(device, memory_format=torch.channels_last)
    val_y = torch.from_numpy(val.labels)
    averaged = copy.deepcopy(net) if hp.ema else None

    biases = [p for name, p in net.named_parameters() if "norm" in name and p.requires_grad]
    others = [p for name, p in net.named_parameters() if "norm" not in name and p.requires_grad]
    bias_lr = hp.lr * hp.bias_lr_scale
    optimizer = torch.optim.SGD(
        [
            # Decay scaled so every group shrinks by the same lr * weight_decay per step.
            {
                "params": biases,
                "lr": bias_lr,
                "weight_decay": hp.weight_decay * hp.lr / bias_lr if bias_lr else 0.0,
            },
            {"params": others, "lr": hp.lr, "weight_decay": hp.weight_decay},
        ],
        momentum=hp.momentum,
        nesterov=hp.momentum > 0,
    )
    steps_per_epoch = math.ceil(len(train_x) / hp.batch_size)
    total_steps = hp.epochs * steps_per_epoch
    warmup_steps = max(1, round(hp.warmup_fraction * total_steps))

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    losses: list[float] = []
    train_accuracies: list[float] = []
    val_logits: list[np.ndarray] = []
    seconds: list[float] = []
    for epoch in range(1, hp.epochs + 1):
        started = time.monotonic()
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        images = augment(train_x[order], hp.translate, hp.flip, hp.cutout, generator)
        labels = train_y[order]
        total_loss, correct = 0.0, 0
        for start in range(0, len(images), hp.batch_size):
            batch = images[start : start + hp.batch_size].to(
                device, memory_format=torch.channels_last
            )
            target = labels[start : start + hp.batch_size].to(device)
            weight, partner = 1.0, target
            if hp.mixup:
                weight = float(mixup_rng.beta(hp.mixup, hp.mixup))
                shuffled = torch.randperm(len(batch), generator=generator).to(device)
                batch = weight * batch + (1 - weight) * batch[shuffled]
                partner = target[shuffled]
            member_logits = net.member_logits(batch)
            # Each member learns from its own loss, as if trained alone; the sum keeps
            # every member's gradient the size it would have alone.
            loss = torch.stack(
                [
                    weight * loss_fn(logits, target) + (1 - weight) * loss_fn(logits, partner)
                    for logits in member_logits
                ]
            ).sum()
            logits = member_logits.mean(0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                update_average(averaged, net, hp.ema)
            total_loss += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == target).sum())
        final = averaged if averaged is not None else net
        final.eval()
        with torch.no_grad():
            logits = final(val_x).double().cpu()
        losses.append(total_loss / len(images))
        train_accuracies.append(correct / len(images))
        val_logits.append(logits.numpy())
        seconds.append(time.monotonic() - started)
        if progress:
            print(
                f"member {index + 1}/{hp.members} epoch {epoch}/{hp.epochs} "
                f"loss {losses[-1]:.4f} train_acc {train_accuracies[-1]:.4f} "
                f"val_acc {float((logits.argmax(1) == val_y).float().mean()):.4f} "
                f"val_loss {float(nn.functional.cross_entropy(logits, val_y)):.4f} "
                f"seconds {seconds[-1]:.1f}",
                flush=True,
            )
    final = averaged if averaged is not None else net
    state = final.members[0].to("cpu", memory_format=torch.contiguous_format).state_dict()
    return MemberResult(
        {name: value.detach().numpy() for name, value in state.items()},
        losses,
        train_accuracies,
        np.stack(val_logits),
        seconds,
    )


def update_average(averaged: nn.Module, net: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for mean, current in zip(
            averaged.state_dict().values(), net.state_dict().values(), strict=True
        ):
            if mean.dtype.is_floating_point:
                mean.lerp_(current, 1 - decay)
            else:
                mean.copy_(current)
