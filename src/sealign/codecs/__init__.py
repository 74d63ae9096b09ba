"""Audio codecs: the :class:`Codec` contract, the built-in WORLD codec and neural-codec adapters."""

from sealign.codecs.base import (
    Codec,
    CodecError,
    CodecUnavailable,
    LatentCodec,
    codebook_sizes,
    load_codec,
)

__all__ = [
    "Codec",
    "CodecError",
    "CodecUnavailable",
    "LatentCodec",
    "codebook_sizes",
    "load_codec",
]
