"""sealign: post-train generative speech-enhancement models on perceptual metrics."""

__version__ = "0.1.0"
