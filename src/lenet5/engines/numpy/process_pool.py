"""ProcessPoolExecutor: worker 0 in the calling thread, workers 1.. in processes (an executor, see executors.py).

Processes, not threads: two worker threads trained no faster than one, held back by the GIL (workers.py). At most
one process per core besides the calling thread; workers beyond them run in the calling thread. The processes
share the parameters (the engine's Network reads them, its optimizer updates them in place), the batch and their
gradients with the engine through shared memory (workers.py).

Each step the calling thread:

1. asks the free-cores policy (free_cores.py) how many processes get work: while other programs hold the cores,
   it does the idle processes' pieces itself (a process sharing a core with another program holds up every
   step);
2. copies the images of the processes' pieces into the shared batch block and orders them to start;
3. runs worker 0's pieces, then those of the workers without a process;
4. collects the processes' answers; a lost process's pieces are done here.

The workers' gradients are then added in worker order, wherever each ran: the same bits (pieces.py).
"""

from __future__ import annotations

import numpy as np

from lenet5.engines.numpy import executors, workers
from lenet5.engines.numpy.executors import InThreadExecutor, add_parts, logit_rounds
from lenet5.engines.numpy.model import Network, parameter_count
from lenet5.engines.numpy.pieces import Pieces
from lenet5.engines.numpy.workers import LOGITS, TRAIN, SharedBlock, WorkerProcesses, shared_block, state_layout
from lenet5.free_cores import adaptive, available_cores, own_seconds, process_seconds


def process_pool(
    model_name: str, dtype: np.dtype, label_smoothing: float, threads: int, grad: np.ndarray
) -> ProcessPoolExecutor | None:
    """A pool for ``threads`` workers, or None where no process can be had: not POSIX, one core, or no shared
    memory (told in one line by workers.shared_block)."""
    processes = min(threads, available_cores()) - 1 if workers.SUPPORTED else 0
    if processes < 1:
        return None
    state = shared_block(state_layout(parameter_count(model_name), processes, dtype))
    if state is None:
        return None
    net = Network(model_name, dtype, params=state.arrays["params"])
    here = InThreadExecutor(net, grad, label_smoothing, threads)
    return ProcessPoolExecutor(here, state, WorkerProcesses(processes, model_name, dtype, label_smoothing, state))


class ProcessPoolExecutor:
    """Workers 1..processes.count in processes, the others (and those of idle or lost processes) in ``here``.

    ``state`` is the shared block of the parameters (``here.net.params``) and of one gradient buffer a process.
    """

    def __init__(self, here: InThreadExecutor, state: SharedBlock, processes: WorkerProcesses) -> None:
        self.here, self.state, self.processes = here, state, processes
        self.net, self.grad = here.net, here.grad
        self.in_use = processes.count  # processes given work; the free-cores policy lowers it while others run
        self.free_cores = adaptive(self._use_workers, processes.count + 1, self.cpu_seconds)

    @property
    def workers_in_use(self) -> int:
        """This thread and the processes the free-cores policy gives work."""
        return self.in_use + 1

    def _use_workers(self, workers: int) -> None:
        self.in_use = workers - 1

    def cpu_seconds(self) -> float:
        """CPU seconds of this process and its worker processes: what the free-cores policy counts as ours."""
        return own_seconds() + sum(map(process_seconds, self.processes.pids()))

    def _split(self, plan: list[Pieces], x: np.ndarray) -> tuple[list[Pieces], list[tuple[int, Pieces]]]:
        """(the plans of workers 1..k, which go to the processes; [(worker, plan)] of those that run here)."""
        if self.free_cores is not None:
            self.free_cores.tick()
        k = min(self.in_use, len(plan) - 1)
        if k and not self.processes.usable(max(len(x), executors.LOGITS_ROUND), x.shape[1:]):
            k = 0  # still starting: this thread does their pieces
        return plan[1 : 1 + k], list(enumerate(plan[1 + k :], start=1 + k))

    def _hand_out(
        self, what: int, x: np.ndarray, y: np.ndarray | None, plans: list[Pieces]
    ) -> dict[str, np.ndarray] | None:
        """Copy the images of the processes' plans into the shared batch block and order the processes to start
        on them; returns the block's arrays (None when there is nothing to hand out). They stay readable after
        a lost process closed the block."""
        if not plans:
            return None
        batch = self.processes.batch  # _split found the processes up for this batch
        for worker_pieces in plans:
            for a, b in worker_pieces:
                batch["x"][a:b] = x[a:b]
                if y is not None:
                    batch["y"][a:b] = y[a:b]
        self.processes.order(what, len(x), plans)
        return batch

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        n = len(x)
        plan = self.here.plan(n)
        remote, local = self._split(plan, x)
        batch = self._hand_out(TRAIN, x, y, remote)
        loss, n_correct = self.here.first.loss_and_grad(x, y, plan[0], n)
        parts = self.here.run(x, y, local, n)
        if batch is not None:
            parts = self._collect(x, y, n, remote) + parts
        return add_parts(self.grad, loss, n_correct, parts)  # in worker order, wherever each ran: reproducible

    def _collect(self, x: np.ndarray, y: np.ndarray, n: int, remote: list[Pieces]) -> list:
        """The processes' ((loss, correct), gradient), in worker order; a lost process's pieces are done here
        (the same pieces and sums, so the same bits)."""
        parts = []
        for w, (worker_pieces, answer) in enumerate(zip(remote, self.processes.wait()), start=1):
            if answer is None:
                parts += self.here.run(x, y, [(w, worker_pieces)], n)
            else:
                parts.append((answer, self.state.arrays["grads"][w - 1]))
        return parts

    def logits(self, x: np.ndarray, out: np.ndarray) -> None:
        for a, b in logit_rounds(len(x)):
            part, part_out = x[a:b], out[a:b]
            plan = self.here.plan(len(part))
            remote, local = self._split(plan, part)
            batch = self._hand_out(LOGITS, part, None, remote)
            for worker_pieces in [plan[0]] + [p for _, p in local]:
                self.here.first.logits(part, worker_pieces, part_out)
            if batch is None:
                continue
            for worker_pieces, answer in zip(remote, self.processes.wait()):
                if answer is None:  # a lost process: its pieces are done here
                    self.here.first.logits(part, worker_pieces, part_out)
                    continue
                for p, q in worker_pieces:
                    part_out[p:q] = batch["logits"][p:q]

    def hurry(self) -> None:
        self.processes.hurry = True

    def close(self) -> None:
        """Stop the processes and free the batch block; the next step starts them again."""
        self.processes.close()
