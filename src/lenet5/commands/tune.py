"""`lenet5 tune`: search hyperparameters with Optuna (tune.py), scored on validation, and print the study."""

from __future__ import annotations

from lenet5.commands.config_flags import flag_overrides
from lenet5.commands.output import EXIT_INTERRUPTED, print_err, print_json
from lenet5.errors import Lenet5Error


def cmd_tune(args) -> int:
    from lenet5.config import resolve_config
    from lenet5.data.datasets import load_mnist
    from lenet5.training.trainer import TrainingInterrupted
    from lenet5.tune import TuneSettings, display_url, run_study

    if args.trials < 1 or args.epochs < 1:
        raise Lenet5Error("--trials and --epochs must be at least 1")
    base = resolve_config(args.config, flag_overrides(args), args.set or [])
    settings = TuneSettings(
        storage=args.storage,
        study_name=args.study_name,
        trials=args.trials,
        timeout=args.timeout,
        epochs=args.epochs,
        train_size=args.train_size,
        heartbeat=args.heartbeat,
        sampler_seed=args.sampler_seed,
        out=args.out,
    )
    data = load_mnist(base.data.data_dir, base.data.dataset)
    try:
        summary = run_study(base, data, settings, log=print_err)
    except (TrainingInterrupted, KeyboardInterrupt):
        print_err(
            f"interrupted; the running trial is marked failed. Continue the study with the same command "
            f"(--storage {display_url(args.storage)} --study-name {args.study_name})"
        )
        return EXIT_INTERRUPTED
    if args.json:
        print_json(summary)
        return 0
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary["trials"].items()))
    print(f"study {summary['study']} ({summary['storage']}): {counts}")
    best = summary["best"]
    if best is None:
        print("no trial has completed yet")
        return 0
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    print(f"best trial {best['number']}: validation accuracy {100 * best['val_accuracy']:.2f}%  ({params})")
    print(f"its config: {summary['config']}  -> lenet5 train --config {summary['config']} --epochs 10")
    return 0
