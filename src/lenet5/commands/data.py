"""`lenet5 data`: fetch and verify MNIST into the cache and say what is there; optionally a picture of the
training distortions."""

from __future__ import annotations

from pathlib import Path

from lenet5.commands.output import print_json


def cmd_data(args) -> int:
    from lenet5.data.datasets import load_mnist

    data = load_mnist(args.data_dir, args.dataset or "mnist")
    files = data.files
    counts = {
        "train_images": int(len(data.train_images)),
        "train_labels": int(len(data.train_labels)),
        "test_images": int(len(data.test_images)),
        "test_labels": int(len(data.test_labels)),
    }
    report = {
        "dataset": files.dataset,
        "folder": str(files.folder),
        "counts": counts,
        "files": {
            name: {"path": str(files.paths[name]), "sha256": files.sha256[name], "source": files.sources[name]}
            for name in files.paths
        },
    }
    if args.preview_augment:
        from lenet5.config import apply_dict, resolve_config
        from lenet5.data.augment import write_preview

        cfg = apply_dict(resolve_config(), {"augment": {"enabled": True}}, source="--preview-augment")
        write_preview(data.train_images, data.train_labels, cfg.augment, Path(args.preview_augment))
        report["preview_augment"] = {"path": args.preview_augment, "augment": dict(vars(cfg.augment))}
    if args.json:
        print_json(report)
        return 0
    print(f"{files.dataset} is ready in {files.folder}")
    print(f"  train: {counts['train_images']} images, {counts['train_labels']} labels")
    print(f"  test:  {counts['test_images']} images, {counts['test_labels']} labels")
    for name, info in report["files"].items():
        print(f"  {name}  sha256 {info['sha256']}")
        print(f"      {info['path']}  (from {info['source']})")
    if args.preview_augment:
        settings = ", ".join(f"{k} {v:g}" for k, v in report["preview_augment"]["augment"].items() if k != "enabled")
        print(f"augmentation preview ({settings}) written to {args.preview_augment}")
    return 0
