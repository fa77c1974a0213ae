"""``seggpt train`` with this project's extra loss registered: the attribute loss (``attributes.py``).

    python projects/synthcontext/scripts/train.py projects/synthcontext/configs/embedded_attributes.yaml [key=value ...]

Takes what ``seggpt train`` takes (``--help``); under torchrun every process runs this file, so every one has it.
Configs that name no ``extra_loss`` train as with ``seggpt train``.
"""

from __future__ import annotations

import sys

import attributes

from seggpt.cli import main

if __name__ == "__main__":
    attributes.register()
    raise SystemExit(main(["train", *sys.argv[1:]]))
