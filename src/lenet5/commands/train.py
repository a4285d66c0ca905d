"""`lenet5 train`: resolve the config, run training (training/run.py), print the result and what to do next."""

from __future__ import annotations

from lenet5.commands.config_flags import flag_overrides
from lenet5.commands.output import EXIT_INTERRUPTED, print_err, print_json


def cmd_train(args) -> int:
    import time

    from lenet5.config import resolve_config
    from lenet5.training.callbacks import LAST_FILE
    from lenet5.training.run import RunInterrupted, resume_from, train_run

    started = time.perf_counter()
    if args.resume:
        resume, cfg = resume_from(args.resume, flag_overrides(args), args.set or [], args.config), None
    else:
        resume, cfg = None, resolve_config(args.config, flag_overrides(args), args.set or [])
    try:
        run_dir, result = train_run(cfg, resume, log=print_err)
    except RunInterrupted as stop:
        if stop.saved:
            print_err(
                f"interrupted at epoch {stop.epoch}, batch {stop.batch}; saved {stop.run_dir / LAST_FILE}. "
                f"Resume with: lenet5 train --resume {stop.run_dir}"
            )
        else:
            print_err(
                f"stopped in the middle of a step at epoch {stop.epoch}; the checkpoint of the last completed epoch "
                f"(if any) is kept in {stop.run_dir}. Resume with: lenet5 train --resume {stop.run_dir}"
            )
        return EXIT_INTERRUPTED
    if result is None:  # a torchrun rank that does not write
        return 0
    total = time.perf_counter() - started
    m = result.metrics
    before = _seconds_trained_before(resume)
    if args.json:
        print_json(
            {
                **{k: v for k, v in m.items() if k not in ("per_class", "confusion_matrix")},
                "run_dir": str(run_dir),
                "total_seconds": round(total, 3),
            }
        )
    else:
        print(
            f"test accuracy {100 * m['test_accuracy']:.2f}%  test loss {m['test_loss']:.4f}  "
            f"(model from epoch {m['model_epoch']} of {m['epochs']})"
        )
        if before is None:
            print(f"trained in {m['train_seconds']:.1f}s (this command took {total:.1f}s); run folder: {run_dir}")
        else:  # train_seconds counts every session of the run; this command only ran the last one
            print(
                f"trained in {m['train_seconds']:.1f}s in all: {before:.1f}s before this resume and "
                f"{max(0.0, m['train_seconds'] - before):.1f}s now (this command took {total:.1f}s); "
                f"run folder: {run_dir}"
            )
        print(
            f"next: lenet5 evaluate --model {run_dir}\n      lenet5 predict --model {run_dir} your-digit.png\n"
            f"      lenet5 serve --model {run_dir}   (then open http://127.0.0.1:8000/)"
        )
    return 0


def _seconds_trained_before(resume) -> float | None:
    """Seconds of training a resumed run had done before this command (None for a new run)."""
    if resume is None:
        return None
    last = getattr(resume, "last", None)
    state = (last.meta.get("trainer_state") if last is not None else None) or {}
    seconds = state.get("seconds", 0.0) if isinstance(state, dict) else 0.0
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0.0
