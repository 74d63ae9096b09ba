"""Audio codecs: the :class:`Codec` contract, the built-in WORLD codec and neural-codec adapters
(:mod:`sealign.codecs.neural`). Build any of them from a spec string with :func:`load_codec`;
add your own kind with :func:`register_codec`."""

from sealign.codecs.base import (
    Codec,
    CodecError,
    CodecUnavailable,
    LatentCodec,
    codebook_sizes,
    codec_kinds,
    load_codec,
    register_codec,
)
from sealign.codecs.world import WorldCodec, WorldCodecConfig, train_world_codec

__all__ = [
    "Codec",
    "CodecError",
    "CodecUnavailable",
    "LatentCodec",
    "WorldCodec",
    "WorldCodecConfig",
    "codebook_sizes",
    "codec_kinds",
    "load_codec",
    "register_codec",
    "train_world_codec",
]
