"""`lenet5 serve`: the HTTP API (POST /predict) and the page to draw a digit on, served by uvicorn."""

from __future__ import annotations

from lenet5.commands.model_flag import model_paths
from lenet5.commands.output import print_err
from lenet5.errors import Lenet5Error

MAX_BODY_MB = 100  # serve --max-body-mb: bodies are held in memory while they arrive
MAX_WORKERS = 32  # serve --workers: each process holds a model and up to one image's decoding
LOOK_SECONDS = 0.3  # how long serve watches the machine to count the cores other programs leave free


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
    from lenet5.serve.reading import load_reader

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
    count_free_cores = watch_free_cores() if args.workers is None else None  # while the model loads
    reader = load_reader(paths, engine=args.engine)
    try:  # uvicorn only logs a failed bind and exits 1: check first for a one-line error
        socket.create_server((args.host, args.port)).close()
    except (OSError, OverflowError) as exc:  # port in use or out of range, no permission, unknown host
        raise Lenet5Error(f"cannot serve on {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}") from None
    workers = args.workers if count_free_cores is None else count_free_cores()
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


def watch_free_cores():
    """Start watching the machine; the function returned gives serve's default --workers: the cores other
    programs leave free (free_cores.py's rule, over at least LOOK_SECONDS), or 0 when that is one core: a single
    worker would read no faster than the server's threads."""
    import time

    from lenet5.free_cores import CHECK_SECONDS, adaptive, available_cores
    from lenet5.serve.readers import SUPPORTED

    cores = available_cores()
    policy = adaptive(lambda n: None, most=cores) if SUPPORTED else None
    start = time.monotonic()

    def count() -> int:
        if policy is None:  # not POSIX, one core, or no /proc/stat to tell how busy the machine is
            return cores if SUPPORTED and cores > 1 else 0
        time.sleep(max(0.0, start + max(LOOK_SECONDS, CHECK_SECONDS + 0.01) - time.monotonic()))
        policy.tick()
        return policy.threads if policy.threads > 1 else 0

    return count
