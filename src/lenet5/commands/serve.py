"""`lenet5 serve`: the HTTP API (POST /predict) and the page to draw a digit on, served by uvicorn."""

from __future__ import annotations

from lenet5.commands.model_flag import model_paths
from lenet5.commands.output import print_err
from lenet5.errors import Lenet5Error

MAX_BODY_MB = 100  # serve --max-body-mb: bodies are held in memory while they arrive
MAX_WORKERS = 32  # serve --workers: each process holds a model and up to one image's decoding


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from lenet5.serve.app import create_app, uvicorn_options
    except ImportError as exc:
        raise Lenet5Error(
            f'serve needs FastAPI and uvicorn ({exc.name} is missing): pip install -e ".[serve]"'
        ) from None
    import socket

    from lenet5.checkpoint import describe_model
    from lenet5.predict import load_reader

    for flag in ("body_timeout", "header_timeout", "idle_timeout"):
        if not getattr(args, flag) > 0:
            raise Lenet5Error(
                f"--{flag.replace('_', '-')} must be a positive number of seconds, got {getattr(args, flag)}"
            )
    if not 1 <= args.max_body_mb <= MAX_BODY_MB:
        raise Lenet5Error(f"--max-body-mb must be between 1 and {MAX_BODY_MB}, got {args.max_body_mb:g}")
    if args.workers is not None and not 0 <= args.workers <= MAX_WORKERS:
        raise Lenet5Error(f"--workers must be between 0 and {MAX_WORKERS}, got {args.workers}")
    paths = model_paths(args)
    reader = load_reader(paths, engine=args.engine)
    try:  # uvicorn only logs a failed bind and exits 1: check first for a one-line error
        socket.create_server((args.host, args.port)).close()
    except (OSError, OverflowError) as exc:  # port in use or out of range, no permission, unknown host
        raise Lenet5Error(f"cannot serve on {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}") from None
    workers = default_workers() if args.workers is None else args.workers
    app = create_app(
        reader,
        body_timeout=args.body_timeout,
        max_body_bytes=int(args.max_body_mb * 1_000_000),
        workers=workers,
        engine=args.engine,
    )
    options = uvicorn_options(header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
    what = (
        f"the {reader.model_name} LeNet-5 from {describe_model(paths[0])}"
        if len(paths) == 1
        else f"a committee of {len(paths)} models ({', '.join(describe_model(p) for p in paths)})"
    )
    where = f"{workers} worker process{'es' if workers != 1 else ''}" if workers else "the server's threads"
    print_err(f"serving {what} on http://{args.host}:{args.port}/ (uploaded images read in {where})")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level in ("info", "debug"),
        **options,
    )
    return 0


def default_workers() -> int:
    """serve's default --workers: one per core this process may use, or 0 on a single core (one worker would
    read no faster than the server's threads) and where worker processes are not supported. Workers take CPU
    only while they read, so they are not sized by what other programs use at start: a server started beside
    a training run would otherwise keep no workers all its life."""
    from lenet5.free_cores import available_cores
    from lenet5.serve.readers import SUPPORTED

    cores = available_cores()
    return cores if SUPPORTED and cores > 1 else 0
