"""Train the reader: the LeNet-5 that `lenet5 predict` and `serve` bundle for people's own handwriting.

    python -m lenet5.training.reader --seed 0 --epochs 40 --out runs/reader     (needs the torch extra)

The same modern LeNet-5 and the same optimizer as ``config.yaml``'s default (SGD, Nesterov momentum 0.9,
one-cycle to a peak lr of 0.05, L2 5e-4, batch 64), trained on what the photo reader hands the network:

- every epoch, each of MNIST's 55,000 training digits once: half in another hand (``data.hands``: stroke width
  from hairline to marker, slant, aspect, broken strokes, rotation, the reader's off-centre and mis-scaled
  fields, a neighbour's sliver at the edge, a coarse grid of a few cells), half with MNIST-like distortions
  (``data.augment``: rotation 10 degrees, zoom 10%, shear 10 degrees, shift 2 px), so that MNIST itself stays
  read as well as before; in the last fifth of the epochs a quarter in other hands;
- and 15% as many things that are not a digit (``data.nondigits``: letters and signs, drawn or set in the
  DejaVu fonts when the machine has them, scribbles, outlines, shapes, text, textures, two digits in one
  field, pieces of digits), whose target is the uniform distribution over the ten digits (outlier exposure):
  the network learns to say "none of these".

The distorted copies of an epoch are drawn from ``(seed, epoch)`` in a second process while the network
trains on the previous epoch. The weights of the epoch with the best validation accuracy (clean and
hand-styled validation digits together) are kept; the temperature is fitted on both validation sets.
The result is a checkpoint like any other (``lenet5 evaluate --model runs/reader/model.safetensors``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

NON_DIGIT_SHARE = 0.15  # non-digits per training digit
HAND_SHARE = 0.5  # training digits drawn in another hand (the rest: MNIST-like distortions)
COOL_SHARE = 0.25  # ... in the last COOL_DOWN of the epochs
COOL_DOWN = 0.2
VAL_SIZE = 5000


def hand_share(epoch: int, epochs: int) -> float:
    """The share of digits drawn in other hands in an epoch: HAND_SHARE, then COOL_SHARE for the last
    COOL_DOWN of the epochs, where the learning rate is small and MNIST's own look is learnt to the end."""
    return COOL_SHARE if epoch >= round((1 - COOL_DOWN) * epochs) else HAND_SHARE


def epoch_data(
    images: np.ndarray, labels: np.ndarray, seed: int, epoch: int, share: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's training fields, shuffled: uint8 (M, 28, 28) and int64 (M,) labels, -1 for a non-digit;
    ``share`` of the digits in other hands (default HAND_SHARE)."""
    from lenet5.config import AugmentConfig
    from lenet5.data.augment import make_augmenter
    from lenet5.data.hands import hand_style
    from lenet5.data.nondigits import non_digits

    rng = np.random.default_rng([seed, epoch])
    n = len(images)
    hand = rng.random(n) < (HAND_SHARE if share is None else share)
    out = np.empty_like(images)
    out[hand] = hand_style(images[hand], rng, neighbours=images)
    mnist_like = make_augmenter(AugmentConfig(enabled=True))
    out[~hand] = mnist_like(images[~hand], rng)
    extra = non_digits(int(NON_DIGIT_SHARE * n), rng, images, ones=images[labels == 1])
    x = np.concatenate([out, extra])
    y = np.concatenate([labels.astype(np.int64), np.full(len(extra), -1, np.int64)])
    order = rng.permutation(len(x))
    return x[order], y[order]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lenet5.training.reader", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the data (default 0)")
    ap.add_argument("--epochs", type=int, default=40, help="epochs (default 40)")
    ap.add_argument("--out", default="runs/reader", help="a new folder for model.safetensors and history.json")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads (the data is drawn in one more process)")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N training digits only (a smoke run)")
    ap.add_argument("--data-dir", default=None, help="where MNIST is (default: lenet5's cache)")
    args = ap.parse_args(argv)
    if not 1 <= args.epochs <= 1000 or not 1 <= args.threads <= 64 or not 0 <= args.seed < 2**32:
        ap.error("--epochs must be 1..1000, --threads 1..64 and --seed 0..2^32-1")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    from lenet5.errors import Lenet5Error

    try:
        return train(args)
    except Lenet5Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130


def train(args: argparse.Namespace) -> int:
    """The run main() describes; Lenet5Error for what a user can mend (a used folder, missing data or torch)."""
    from lenet5.errors import Lenet5Error

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise Lenet5Error('the reader is trained with PyTorch: pip install -e ".[torch]"') from None

    out = Path(args.out)
    used = f"{out} exists and is not an empty folder; name a new one with --out (a run never overwrites another)"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Lenet5Error(used)
    try:  # claim the folder: of two runs started together, one creates history.json, the other stops here
        out.mkdir(parents=True, exist_ok=True)
        os.close(os.open(out / "history.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise Lenet5Error(used) from None
    except OSError as exc:
        raise Lenet5Error(f"{out}: cannot create the run folder ({exc.strerror or exc})") from None
    try:
        return _fit(args, out, torch, F)
    except BaseException:  # a failed or interrupted run gives its folder back, as it found it
        placeholder = out / "history.json"
        with contextlib.suppress(OSError):
            if placeholder.stat().st_size == 0:
                placeholder.unlink()
                out.rmdir()  # only if nothing else is in it
        raise


def _fit(args: argparse.Namespace, out: Path, torch, F) -> int:
    """Train, calibrate and write ``out``/model.safetensors and history.json (the folder is claimed)."""
    from lenet5.atomic import atomic_write_text
    from lenet5.calibration import calibrate
    from lenet5.checkpoint import save_checkpoint
    from lenet5.data.datasets import load_mnist, normalize, split_train_val
    from lenet5.data.hands import hand_style
    from lenet5.data.nondigits import typed_fonts
    from lenet5.engines.torch.model import LeNet5
    from lenet5.errors import Lenet5Error
    from lenet5.models import initial_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mnist = load_mnist(args.data_dir)
    tx, ty, vx, vy = split_train_val(mnist.train_images, mnist.train_labels, VAL_SIZE, args.seed)
    if args.limit is not None:
        tx, ty = tx[: args.limit], ty[: args.limit]
    vx_hand = hand_style(vx, np.random.default_rng([args.seed, 10**6]), neighbours=tx)
    net = LeNet5("modern")
    start = initial_weights("modern", "kaiming_uniform", args.seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    batch = 64
    steps_per_epoch = -(-int(len(tx) * (1 + NON_DIGIT_SHARE)) // batch)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps_per_epoch * args.epochs)

    def logits_of(images: np.ndarray) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            out = [net(torch.from_numpy(normalize(images[i : i + 2000]))).numpy() for i in range(0, len(images), 2000)]
        return np.concatenate(out).astype(np.float64)

    history, best, best_state = [], -1.0, None
    started = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        coming = pool.submit(epoch_data, tx, ty, args.seed, 0, hand_share(0, args.epochs))
        for epoch in range(args.epochs):
            x, y = coming.result()
            if epoch + 1 < args.epochs:
                coming = pool.submit(epoch_data, tx, ty, args.seed, epoch + 1, hand_share(epoch + 1, args.epochs))
            net.train()
            total, seen = 0.0, 0
            for at in range(0, len(x), batch):
                xb = torch.from_numpy(normalize(x[at : at + batch]))
                yb = torch.from_numpy(y[at : at + batch])
                logp = F.log_softmax(net(xb), dim=1)
                digit = yb >= 0
                loss_sum = -logp[digit, yb[digit]].sum() - logp[~digit].mean(dim=1).sum()
                loss = loss_sum / len(yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched.last_epoch + 1 < sched.total_steps:
                    sched.step()
                total += float(loss_sum.detach())
                seen += len(yb)
            clean = float(np.mean(logits_of(vx).argmax(1) == vy))
            hand = float(np.mean(logits_of(vx_hand).argmax(1) == vy))
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": total / seen,
                    "val_accuracy": clean,
                    "val_hand_accuracy": hand,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(history[-1]), file=sys.stderr, flush=True)
            if clean + hand > best:
                best = clean + hand
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    best_epoch = max(history, key=lambda h: h["val_accuracy"] + h["val_hand_accuracy"])
    val_logits = np.concatenate([logits_of(vx), logits_of(vx_hand)])
    calibration = calibrate(val_logits, np.concatenate([vy, vy]))
    calibration["fitted_on"] = f"validation split ({len(vy)} images) and the same digits in other hands"
    test_logits = logits_of(mnist.test_images)
    metrics = {
        "test_accuracy": float(np.mean(test_logits.argmax(1) == mnist.test_labels)),
        "val_accuracy": best_epoch["val_accuracy"],
        "val_hand_accuracy": best_epoch["val_hand_accuracy"],
        "best_epoch": best_epoch["epoch"],
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    recipe = {
        "recipe": "lenet5.training.reader",
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": batch,
        "limit": args.limit,
        "optimizer": "sgd nesterov 0.9, one-cycle lr 0.05, l2 5e-4",
        "hand_share": HAND_SHARE,
        "cool_share": COOL_SHARE,
        "cool_down": COOL_DOWN,
        "non_digit_share": NON_DIGIT_SHARE,
        "typed_fonts": len(typed_fonts()),  # signs set in fonts among the non-digits (0: drawn by hand)
    }
    weights = {k: v.numpy() for k, v in net.state_dict().items()}
    try:
        save_checkpoint(
            out / "model.safetensors",
            weights,
            engine="torch",
            model="modern",
            config=recipe,
            epoch=best_epoch["epoch"],
            metrics=metrics,
            calibration=calibration,
        )
        atomic_write_text(out / "history.json", json.dumps({"history": history, "metrics": metrics}, indent=1))
    except OSError as exc:
        raise Lenet5Error(f"{out}: cannot write the model ({exc.strerror or exc})") from None
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
