"""Per-epoch progress on stderr: a tqdm bar on a terminal, plain log lines (every 20%) otherwise."""

from __future__ import annotations

import sys
import time


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, total: int, initial: int = 0, log=None):
        self.epoch, self.epochs, self.total, self.done = epoch, epochs, total, initial
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.start, self.start_done = time.perf_counter(), initial
        self.next_log = initial + max(1, total // 5)
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=f"epoch {epoch}/{epochs}",
                unit="batch",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    def update(self, partial: dict, lr: float) -> None:
        self.done += 1
        seen = max(1, partial["seen"])
        if self.bar is not None:
            self.bar.update(1)
            if self.done % 10 == 0 or self.done == self.total:
                self.bar.set_postfix(
                    loss=f"{partial['loss_sum'] / seen:.4f}",
                    acc=f"{100 * partial['correct'] / seen:.2f}%",
                    img_s=f"{self.images_per_second(partial):.0f}",
                    lr=f"{lr:.1e}",
                    refresh=False,
                )
        elif self.done >= self.next_log and self.done < self.total:
            self.next_log += max(1, self.total // 5)
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(1, self.done - self.start_done) * (self.total - self.done)
            self.log(
                f"  epoch {self.epoch}/{self.epochs} {100 * self.done // self.total:3d}%  "
                f"loss {partial['loss_sum'] / seen:.4f} acc {100 * partial['correct'] / seen:.2f}%  "
                f"{self.images_per_second(partial):.0f} img/s  eta {eta:.0f}s"
            )

    def images_per_second(self, partial: dict) -> float:
        per_batch = partial["seen"] / max(1, self.done)  # images per batch so far
        return (self.done - self.start_done) * per_batch / max(1e-9, time.perf_counter() - self.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
