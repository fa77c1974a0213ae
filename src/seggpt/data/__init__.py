"""Training data: dataset readers, in-context pair sampling, augmentation and the mixture sampler.

The Source protocol (the contract for every training source, including the procedural SynthContext world in
``seggpt.data.synth`` and ``seggpt.data.real_pairs``):

    from seggpt.data.base import Pair, Source, DataError, IGNORE, SEMANTIC, INSTANCE

    class MySource:                      # satisfies seggpt.data.base.Source (a typing.Protocol)
        name = "mine"
        def __len__(self) -> int: ...
        def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair: ...

    Pair(example_image  (h, w, 3) uint8,  example_labels (h, w) int,
         query_image    (h, w, 3) uint8,  query_labels   (h, w) int,
         seg_type = SEMANTIC (0) | INSTANCE (1),
         ids_global = True,               # ids mean the same class across pairs (False: per-image instance ids)
         meta = {"mode": ..., ...})

Label maps: 0 = background (black), positive ids = classes or instances, IGNORE = -1 = not in the loss.
An id present in both halves is painted with the same random colour in both; colours are drawn afresh for
every pair by the shared pipeline (``seggpt.data.pairs``), never by a source. ``sample_pair`` must depend
only on ``rng`` (no hidden random state): the trainer derives one generator per global sample index, which
makes runs reproducible, exactly resumable and shardable across ranks. ``size`` is (h, w) of one image
(``SegGPTConfig.image_size``); return arrays of that size (others are resized: bicubic / nearest).
Raise ``DataError`` (a ValueError) naming the file for bad data; the trainer can skip and count those.

Registering a source type for YAML configs (``data.sources: [{type: NAME, weight: w, ...options}]``):
``seggpt.data.registry.SOURCE_TYPES`` maps NAME -> "module:factory"; the factory is called with the options
as keyword arguments and returns a Source. Entries "synth" -> ``seggpt.data.synth:build_source`` and
"real_pairs" -> ``seggpt.data.real_pairs:build_source`` are reserved for those modules; one can also call
``seggpt.data.registry.register_source(NAME, factory)`` at import time.

Built-in types: coco_instance, coco_panoptic, coco_stuff, paco (``readers/coco.py``); ade20k, voc (+ SBD),
cityscapes, lip (``readers/scenes.py``); isaid, loveda, aerial (``readers/aerial.py``); vessels (CHASE_DB1,
DRIVE, HRF, STARE; ``readers/vessels.py``); fss1000 (``readers/fss.py``); folder (``folder.py``, users' own
images + masks); toy (``toy.py``, procedural shapes for smoke tests). Readers are ``LabelDataset``s wrapped by
``pairs.SemanticPairs`` (example = a view of the same image with p_same = 0.5, else another image with a
shared class) or ``pairs.InstancePairs`` (two views); ``mixture.TrainingSamples`` turns pairs into samples.
"""

from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError, Pair, Source

__all__ = ["IGNORE", "INSTANCE", "SEMANTIC", "DataError", "Pair", "Source"]
