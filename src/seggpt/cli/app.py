"""``seggpt app [--weights W] [--host H] [--port P]``: the local web page for in-context segmentation."""

from __future__ import annotations

import argparse

from seggpt.cli.options import add_device, add_image_size, add_threshold, device_and_dtype


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="a web page: upload or paint example masks, segment images or a video, download the results",
        description=(
            "Serve a local web page for in-context segmentation. Upload example images, upload or paint their "
            "masks, add target images or a video, and download overlays and label maps. Listens on 127.0.0.1 "
            "only unless --host says otherwise. Needs Flask: pip install 'seggpt[app]'."
        ),
    )
    p.add_argument(
        "--weights",
        default=None,
        help="checkpoint: a path (native, official .pth or HF folder) or a Hugging Face hub id (BAAI/seggpt-vit-large, "
        "BAAI/SegGPT, OWNER/REPO/FILE, each with an optional @REVISION); default: embedded",
    )
    add_image_size(p, aspect=True)
    add_threshold(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    add_device(p)
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="size limit of one request in MiB (default 64)")
    p.add_argument("--max-megapixels", type=float, default=25.0, help="pixel limit of one image (default 25 MP)")
    p.add_argument("--max-examples", type=int, default=8, help="examples per request (default 8)")
    p.add_argument("--max-targets", type=int, default=32, help="target images per request (default 32)")
    p.add_argument("--max-frames", type=int, default=300, help="frames of a video target (default 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    device, dtype = device_and_dtype(args)
    if importlib.util.find_spec("flask") is None:
        raise ValueError("the web app needs Flask, which is not installed: pip install 'seggpt[app]'")
    from seggpt.app import Limits, create_app, is_loopback, serve

    for name in ("max_upload_mb", "max_megapixels", "max_examples", "max_targets", "max_frames"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    limits = Limits(
        max_upload_mb=args.max_upload_mb,
        max_pixels=int(args.max_megapixels * 1e6),
        max_examples=args.max_examples,
        max_targets=args.max_targets,
        max_frames=args.max_frames,
    )
    app = create_app(
        args.weights,
        device=device,
        dtype=dtype,
        limits=limits,
        image_size=args.image_size,
        threshold=args.threshold,
        keep_aspect=args.keep_aspect,
    )
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}; anyone who can reach this machine can use the app")
    try:
        serve(app, host=args.host, port=args.port, on_ready=lambda url: print(f"seggpt app: open {url}", flush=True))
    except OSError as e:  # port in use, address not available
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        pass
    return 0
