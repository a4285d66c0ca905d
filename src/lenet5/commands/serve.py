"""`lenet5 serve`: the HTTP API (POST /predict) and the page to draw a digit on, served by uvicorn."""

from __future__ import annotations

from lenet5.commands.model_flag import model_path
from lenet5.commands.output import print_err
from lenet5.errors import Lenet5Error

MAX_BODY_MB = 100  # serve --max-body-mb: bodies are held in memory while they arrive


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
    from lenet5.predict import Predictor

    for flag in ("body_timeout", "header_timeout", "idle_timeout"):
        if not getattr(args, flag) > 0:
            raise Lenet5Error(
                f"--{flag.replace('_', '-')} must be a positive number of seconds, got {getattr(args, flag)}"
            )
    if not 1 <= args.max_body_mb <= MAX_BODY_MB:
        raise Lenet5Error(f"--max-body-mb must be between 1 and {MAX_BODY_MB}, got {args.max_body_mb:g}")
    path = model_path(args)
    predictor = Predictor.from_checkpoint(path, engine=args.engine)
    app = create_app(predictor, body_timeout=args.body_timeout, max_body_bytes=int(args.max_body_mb * 1_000_000))
    try:  # uvicorn only logs a failed bind and exits 1: check first for a one-line error
        socket.create_server((args.host, args.port)).close()
    except (OSError, OverflowError) as exc:  # port in use or out of range, no permission, unknown host
        raise Lenet5Error(f"cannot serve on {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}") from None
    options = uvicorn_options(header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
    print_err(
        f"serving the {predictor.model_name} LeNet-5 from {describe_model(path)} on http://{args.host}:{args.port}/"
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level in ("info", "debug"),
        **options,
    )
    return 0
