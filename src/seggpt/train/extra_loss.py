"""Extra losses: a head on the encoder's taps, trained beside the in-context loss on samples of its own.

The shipped recipe trains with the in-context loss alone (the paper's objective). Research built on the package
adds a loss without the trainer knowing what it is: it registers an :class:`ExtraLoss` under a name, and a run
names it in its config. projects/synthcontext's attribute supervision is one:

    register_extra_loss("attributes", AttributeLoss())
    train(load_config("embedded_attributes.yaml"))  # extra_loss: {name: attributes, weight: 0.5, batch_size: 8}

Each optimiser step, the loss's ``batch_size`` samples ride at the end of the batch: they add their in-context loss
like any other sample, and the head reads their encoder taps (the decoder's input). The head's weights are
checkpointed beside the model's, so resume stays exact; the saved model is plain SegGPT.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from seggpt.data.masking import MaskingConfig
from seggpt.modeling import SegGPT


class ExtraLoss(Protocol):
    def head(self, model: SegGPT) -> nn.Module:
        """A new head for ``model``: its encoder taps, (n, Hp, Wp, C) each, -> what :meth:`loss` reads."""
        ...

    def samples(
        self, seed: int, step: int, n: int, image_size: tuple[int, int], patch_size: int, masking: MaskingConfig
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The ``n`` samples of optimiser step ``step``: training samples as ``collate`` batches them (images,
        masks, bool_masked_pos, seg_type, valid) and their labels (n, ...). A pure function of (seed, step): every
        process draws the same and takes its share, and a resumed run draws what an uninterrupted one did."""
        ...

    def loss(self, out: Any, labels: Tensor) -> Tensor:
        """The scalar loss of the head's output on ``labels``, normalised per sample (so the gradient of a batch
        does not depend on how it is split over processes and accumulation steps)."""
        ...


_REGISTERED: dict[str, ExtraLoss] = {}


def register_extra_loss(name: str, loss: ExtraLoss) -> None:
    """Make ``loss`` the one a config's ``extra_loss.name: NAME`` trains with (a later call replaces it)."""
    _REGISTERED[name] = loss


def get_extra_loss(name: str) -> ExtraLoss:
    if name not in _REGISTERED:
        raise ValueError(
            f"extra_loss.name {name!r} is not registered (registered: {sorted(_REGISTERED)}): the code that "
            "defines it registers it before training (seggpt.train.register_extra_loss), as a project's own train "
            "script does; or set extra_loss.name=null"
        )
    return _REGISTERED[name]


class WithHead(nn.Module):
    """SegGPT and an extra loss's head as one module, so a step is one forward (what DDP expects).

    ``forward`` returns the predicted canvases of the whole batch and the head's output for its last ``num_extra``
    samples (the extra loss's samples, appended to the batch).
    """

    def __init__(self, model: SegGPT, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(
        self, images: Tensor, masks: Tensor, bool_masked_pos: Tensor, seg_type: Tensor, num_extra: int
    ) -> tuple[Tensor, Any]:
        taps, skips = self.model.encode_with_skips(images, masks, bool_masked_pos, seg_type)
        prior = None
        if self.model.config.fine_prior:
            prior = self.model.canvas_prior(skips[2], masks, bool_masked_pos)
        pred = self.model.forward_decoder(taps, skips=skips, prior=prior)
        return pred, self.head([t[t.shape[0] - num_extra :] for t in taps])
