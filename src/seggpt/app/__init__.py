"""A local web page for in-context segmentation: ``seggpt app``.

Upload example images, upload or paint their masks, upload targets (images or a video), pick the task and the
ensemble, and see overlays and label maps with downloads. Everything runs on this machine, on the embedded model
or any weights ``seggpt.load_model`` reads. Needs the ``app`` extra (Flask).

    >>> from seggpt.app import create_app, serve
    >>> serve(create_app("my_weights.safetensors"), host="127.0.0.1", port=7860)  # doctest: +SKIP
"""

from seggpt.app.server import Limits, Segmenter, create_app, is_loopback, make_server, serve

__all__ = ["Limits", "Segmenter", "create_app", "is_loopback", "make_server", "serve"]
