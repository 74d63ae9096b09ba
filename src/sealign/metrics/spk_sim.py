"""Speaker similarity: cosine similarity of speaker embeddings of output and speaker reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sealign.metrics.base import Metric, MetricInfo, MetricUnavailable, Utterance
from sealign.utils.device import check_device
from sealign.utils.threads import torch_threads


class SpeakerSimilarity(Metric):
    """Cosine similarity between speaker embeddings of the output and a reference voice.

    The reference voice is the utterance's ``speaker_ref`` when given, else its clean
    ``reference`` (manifest loaders fill ``speaker_ref`` from the noisy input when neither exists).
    Encoders:

    - ``resemblyzer`` (default): the GE2E d-vector encoder whose weights ship in the
      ``resemblyzer`` wheel; embeddings are L2-normalized, so scores lie in [-1, 1] (≈0.5–1 on speech).
    - ``hf``: a WavLM/HuBERT x-vector or any ``transformers`` audio model from a local path
      (``model_path``); the embedding is the model's x-vector when it has one, else the mean of
      the last hidden state.
    """

    info = MetricInfo(
        name="spk_sim",
        outputs=("spk_sim",),
        higher_is_better=(True,),
        ranges=((-1.0, 1.0),),
        sample_rate=16000,
        needs_speaker_ref=True,
        version="1",
        description="speaker-embedding cosine similarity (resemblyzer GE2E by default)",
        packages=("resemblyzer",),
        install="pip install --no-deps resemblyzer==0.1.4",
    )

    def __init__(
        self,
        num_threads: int = 2,
        encoder: str = "resemblyzer",
        model_path: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(num_threads, device)
        check_device(device)
        if encoder not in ("resemblyzer", "hf"):
            raise ValueError(f"spk_sim: encoder must be 'resemblyzer' or 'hf', got {encoder!r}")
        if encoder == "hf" and not model_path:
            raise ValueError(
                "spk_sim: encoder='hf' needs model_path (a local transformers model dir)"
            )
        self.encoder = encoder
        self.model_path = model_path
        self._embed = None

    def settings(self) -> dict:
        return {"encoder": self.encoder, "model_path": self.model_path}

    def inputs_used(self) -> set[str]:
        return {"reference", "speaker_ref"}

    def missing_requirement(self, utt: Utterance) -> str | None:
        if utt.speaker_ref is None and utt.reference is None:
            return "no speaker reference or clean reference"
        return None

    def load(self) -> None:
        if self._embed is not None:
            return
        if self.encoder == "resemblyzer":
            try:
                from resemblyzer import VoiceEncoder
                from resemblyzer.audio import preprocess_wav
            except ImportError as err:
                raise MetricUnavailable(f"spk_sim needs resemblyzer: {self.info.install}") from err
            enc = VoiceEncoder(self.device, verbose=False)

            def embed(wav: np.ndarray) -> np.ndarray:
                pre = preprocess_wav(wav)  # volume normalization + long-silence trimming (VAD)
                if pre.size < 1600:  # VAD removed nearly everything: embed the raw signal instead
                    pre = wav
                return enc.embed_utterance(pre)

            self._embed = embed
        else:
            self._embed = _hf_embedder(self.model_path, self.device)

    def _score(self, utts: list[Utterance]) -> list[dict[str, float]]:
        self.load()
        out = []
        with torch_threads(self.num_threads):
            for u in utts:
                ref = u.speaker_ref if u.speaker_ref is not None else u.reference
                a, b = self._embed(u.audio), self._embed(ref)
                cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
                out.append({"spk_sim": cos})
        return out


def _hf_embedder(model_path: str, device: str = "cpu"):
    """Embedding function for a local ``transformers`` audio model (x-vector head if present)."""
    import torch

    path = Path(model_path)
    if not path.is_dir():
        raise MetricUnavailable(
            f"spk_sim: model directory {path} not found (encoder='hf' loads a local model)"
        )
    from transformers import AutoConfig, AutoModel, AutoModelForAudioXVector

    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    has_xvector = any("XVector" in a for a in (cfg.architectures or []))
    cls = AutoModelForAudioXVector if has_xvector else AutoModel
    model = cls.from_pretrained(path, local_files_only=True).eval().to(device)

    def embed(wav: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(wav, dtype=np.float32))[None].to(device)
        x = (x - x.mean()) / (x.std() + 1e-7)
        with torch.inference_mode():
            out = model(x)
        if has_xvector:
            return out.embeddings[0].cpu().numpy()
        return out.last_hidden_state[0].mean(0).cpu().numpy()

    return embed
