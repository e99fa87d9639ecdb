"""SSL speech deepfake detector: a wav2vec 2.0 front end (XLS-R, MMS), padding-aware mean pooling
and a head giving logits ordered [fake, real]; the score is P(real).

Wang, Ge, Yamagishi 2026 (AntiDeepfake code): an SSL front end, mean-pooled over time, then
Linear(D, 2) and a softmax,

    e = (1 / F) sum_t h_t,   logits = W e + b,   score = softmax(logits)[real],

the whole model fine-tuned. The Wav2Vec2-AASIST head (Tak et al. 2022, `aasist.py`) can replace the
linear layer. Hub ids that load with `SSLClassifier.from_pretrained`:
facebook/wav2vec2-xls-r-300m, facebook/wav2vec2-xls-r-1b, facebook/wav2vec2-xls-r-2b,
facebook/mms-300m, facebook/mms-1b (or a local folder written by Wav2Vec2Model.save_pretrained).

Decisions, numbered:
1. Each waveform is normalized over its own valid samples inside the model (zero mean, unit
   variance, like Wav2Vec2FeatureExtractor(do_normalize=True)), so callers pass raw audio and a
   clip's gain does not change its score.
2. attention_mask is passed only for feat_extract_norm == "layer" (XLS-R, MMS). "group"-norm
   models (wav2vec2-base) were trained without one and their GroupNorm mixes statistics over
   the padded tail anyway; the HF docs say to feed them zero-padded input without a mask. The
   pooling still averages only valid frames.
3. The pooled embedding is the final-layer-norm output `last_hidden_state`, averaged over the
   frames the conv stack produces from each clip's valid samples (_get_feat_extract_output_lengths).
4. SpecAugment masking (mask_time_prob, mask_feature_prob) is switched off when loading: HF draws
   its masks from numpy's global RNG, which breaks seeded, exactly resumable runs; the recipes
   augment the waveform (RawBoost) instead. Pass mask_time_prob=... to turn it back on.
5. Heads are initialized from an explicit seed under torch.random.fork_rng, so building a model
   never disturbs (or depends on) the caller's global RNG stream.
6. front_end="logmel" (the CPU miniature's stand-in for pre-training, `SSLClassifier.tiny_logmel`)
   replaces the encoder's conv feature encoder by a fixed log-mel filterbank (LogMelFrontEnd).
   A random conv stack does not learn to see quiet spectral cues (a missing high band 20 dB
   down, digital silence against a -65 dB noise floor) within a CPU budget; a pre-trained SSL
   front end does. The filterbank gives the tiny transformer such frames from step 0. The
   encoder config's conv stack is set to one "layer" of kernel 400 and stride 320, the
   filterbank's window and hop, so transformers' frame-length arithmetic stays exact.
"""
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from aasist import AASIST_TINY, AASISTDims, AASISTHead

HEADS = ("linear", "aasist")
FRONT_ENDS = ("conv", "logmel")
NO_SPEC_AUGMENT = dict(mask_time_prob=0.0, mask_feature_prob=0.0)


def _wav2vec2_config(hidden, layers, heads, intermediate, conv_width, pos_kernel, **overrides):
    """An XLS-R-shaped config (layer-norm conv stack, pre-LN "stable" transformer) with a 3-layer
    conv stack of hop 5*8*8 = 320 samples and receptive field 325, like the real 7-layer stack
    (320, 400): a 1 s clip at 16 kHz gives 49 frames, as XLS-R does. No dropout, so tests and
    miniatures are deterministic; override any field."""
    cfg = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, conv_dim=(conv_width,) * 3, conv_kernel=(10, 8, 8),
        conv_stride=(5, 8, 8), conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=pos_kernel, num_conv_pos_embedding_groups=4,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, layerdrop=0.0, vocab_size=4, **NO_SPEC_AUGMENT,
    )
    cfg.update(overrides)
    return Wav2Vec2Config(**cfg)


def tiny_wav2vec2_config(**overrides):
    """≈0.28 M parameters: hidden 96, 3 layers; for tests and the CPU miniature."""
    return _wav2vec2_config(96, 3, 4, 192, 32, 16, **overrides)


def small_wav2vec2_config(**overrides):
    """≈4 M parameters: hidden 256, 4 layers; for the benchmark."""
    return _wav2vec2_config(256, 4, 4, 1024, 128, 32, **overrides)


def mel_filterbank(n_mels, n_fft, sample_rate, f_max=None):
    """Triangular filters equally spaced on the mel scale, (n_mels, n_fft // 2 + 1).

    mel(f) = 2595 log10(1 + f / 700) (O'Shaughnessy's formula, HTK's mel scale); filter m rises
    linearly from centre m-1 to 1 at centre m and falls to 0 at centre m+1, with n_mels + 2
    centres spaced equally in mel from 0 to f_max (default: Nyquist)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    mel = lambda f: 2595 * torch.log10(1 + f / 700)                       # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)                           # noqa: E731
    centres = hz(torch.linspace(0, float(mel(torch.tensor(f_max))), n_mels + 2,
                                dtype=torch.float64))                     # (n_mels + 2,)
    f = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # bin freqs
    lo, mid, hi = centres[:-2, None], centres[1:-1, None], centres[2:, None]
    rise, fall = (f - lo) / (mid - lo), (hi - f) / (hi - mid)
    return torch.clamp(torch.minimum(rise, fall), min=0).float()


class LogMelFrontEnd(nn.Module):
    """A fixed log-mel filterbank with the conv feature encoder's interface (decision 6):
    waveform (B, T) -> (B, n_mels, F), F = (T - win) // hop + 1 frames (no centring, like a
    conv of kernel `win` and stride `hop`).

        X_f = |rfft(w * x[f*hop : f*hop + win], n_fft)|^2,   e_f = log(M X_f + floor)

    M the mel filterbank, w a Hann window. `floor` (1e-9 of the unit-variance waveform's power,
    -90 dB) sits below a -65 dB noise floor, so digital silence stays distinguishable from it.
    It has no parameters: nothing here is learned."""

    def __init__(self, n_mels=64, sample_rate=16000, win=400, hop=320, n_fft=512, floor=1e-9):
        super().__init__()
        self.n_mels, self.win, self.hop, self.n_fft, self.floor = n_mels, win, hop, n_fft, floor
        self.register_buffer("window", torch.hann_window(win, periodic=True), persistent=False)
        self.register_buffer("fbank", mel_filterbank(n_mels, n_fft, sample_rate), persistent=False)
        self._requires_grad = False  # read by transformers' checkpointing path

    def forward(self, x):
        frames = x.float().unfold(-1, self.win, self.hop)                # (B, F, win)
        power = torch.fft.rfft(frames * self.window, n=self.n_fft).abs().square()  # (B, F, K)
        return torch.log(power @ self.fbank.T + self.floor).transpose(1, 2)  # (B, n_mels, F)


def tiny_logmel_config(n_mels=64, **overrides):
    """The tiny config with the log-mel front end's frame arithmetic (decision 6)."""
    return tiny_wav2vec2_config(conv_dim=(n_mels,), conv_kernel=(400,), conv_stride=(320,),
                                **overrides)


def normalize_waveforms(waveforms, sample_mask, eps=1e-7):
    """x_hat = (x - mu) / sqrt(sigma^2 + eps), mu and sigma^2 over each waveform's valid samples
    (the HF feature extractor's do_normalize, eps 1e-7); padded samples stay 0.
    waveforms (B, T) float, sample_mask (B, T) bool -> (B, T) float32."""
    x = waveforms.float() * sample_mask
    n = sample_mask.sum(1, keepdim=True)                       # (B, 1)
    mu = x.sum(1, keepdim=True) / n
    var = ((x - mu) * sample_mask).square().sum(1, keepdim=True) / n
    return (x - mu) / torch.sqrt(var + eps) * sample_mask


def masked_mean(hidden, mask):
    """Mean over the valid frames: hidden (B, F, D), mask (B, F) bool -> (B, D) float32
    (fp32 even under bf16 autocast: the sum runs over hundreds of frames)."""
    m = mask[..., None].float()
    return (hidden.float() * m).sum(1) / m.sum(1)


def score(logits):
    """P(real) = softmax(logits)[:, 1] for logits (B, 2) ordered [fake, real]; computed in fp32."""
    return torch.softmax(logits.float(), dim=-1)[:, 1]


class SSLClassifier(nn.Module):
    """Wav2Vec2Model + padding-aware mean pooling + head ("linear" or "aasist").

    forward(waveforms (B, T) float, lengths (B,) long or None) -> (logits (B, 2), pooled (B, D)).
    """

    def __init__(self, encoder, head="linear", aasist_dims=None, gradient_checkpointing=False,
                 freeze_feature_encoder=False, seed=0, front_end="conv"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {front_end!r}")
        if front_end == "logmel" and not isinstance(encoder.feature_extractor, LogMelFrontEnd):
            # decision 6: the filterbank replaces the conv stack
            encoder.feature_extractor = LogMelFrontEnd(n_mels=encoder.config.conv_dim[-1])
        self.front_end = front_end
        if aasist_dims is not None and head != "aasist":
            raise ValueError(f"aasist_dims given for a {head!r} head")
        self.encoder, self.head_type = encoder, head
        D = encoder.config.hidden_size
        self.aasist_dims = (aasist_dims or AASISTDims()) if head == "aasist" else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(D, 2) if head == "linear" else AASISTHead(D, self.aasist_dims)
        self.gradient_checkpointing = self.freeze_feature_encoder = False
        self.configure(gradient_checkpointing, freeze_feature_encoder)

    score = staticmethod(score)        # model.score(logits) is the module's score(logits)

    def configure(self, gradient_checkpointing=None, freeze_feature_encoder=None):
        """Switch the training options on or off (None leaves one as it is)."""
        enc = self.encoder
        if gradient_checkpointing is not None and gradient_checkpointing != self.gradient_checkpointing:
            # non-reentrant checkpointing: the default of activation_checkpointing_enable, which
            # replaces the deprecated gradient_checkpointing_enable in transformers 5.x
            if gradient_checkpointing:
                getattr(enc, "activation_checkpointing_enable", enc.gradient_checkpointing_enable)()
            else:
                getattr(enc, "activation_checkpointing_disable", enc.gradient_checkpointing_disable)()
            self.gradient_checkpointing = gradient_checkpointing
        if freeze_feature_encoder is not None:
            for p in enc.feature_extractor.parameters():      # the conv stack only
                p.requires_grad = not freeze_feature_encoder
            # HF's own flag (set by enc.freeze_feature_encoder()), read by its checkpointing path
            enc.feature_extractor._requires_grad = not freeze_feature_encoder
            self.freeze_feature_encoder = freeze_feature_encoder

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_config(cls, config, head="linear", seed=0, **opts):
        """A randomly initialized encoder from a Wav2Vec2Config (seeded, global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Wav2Vec2Model(config)
        return cls(encoder, head=head, seed=seed, **opts)

    @classmethod
    def tiny_logmel(cls, head="linear", seed=0, **opts):
        """The CPU miniature's detector: the tiny encoder on a fixed log-mel front end
        (decision 6), the stand-in for a pre-trained SSL front end."""
        if head == "aasist":
            opts.setdefault("aasist_dims", AASIST_TINY)
        return cls.from_config(tiny_logmel_config(), head=head, seed=seed, front_end="logmel",
                               **opts)

    @classmethod
    def tiny(cls, head="linear", seed=0, **opts):
        """Tiny offline model for tests and the CPU miniature (AASIST head at AASIST_TINY size)."""
        if head == "aasist":
            opts.setdefault("aasist_dims", AASIST_TINY)
        return cls.from_config(tiny_wav2vec2_config(), head=head, seed=seed, **opts)

    @classmethod
    def from_pretrained(cls, id_or_folder, head="linear", aasist_dims=None, gradient_checkpointing=False,
                        freeze_feature_encoder=False, seed=0, **config_overrides):
        """A pre-trained SSL encoder (hub id or Wav2Vec2Model.save_pretrained folder) with a new
        head. Weights load in fp32 (the master copy under bf16 autocast); config_overrides go to
        the encoder config, SpecAugment is off unless overridden (decision 4)."""
        if (Path(id_or_folder) / "classifier.json").is_file():
            raise ValueError(f"{id_or_folder} holds a saved SSLClassifier; use SSLClassifier.load")
        encoder = Wav2Vec2Model.from_pretrained(
            id_or_folder, dtype=torch.float32, **{**NO_SPEC_AUGMENT, **config_overrides})
        return cls(encoder, head=head, aasist_dims=aasist_dims, seed=seed,
                   gradient_checkpointing=gradient_checkpointing,
                   freeze_feature_encoder=freeze_feature_encoder)

    # ---------------------------------------------------------------- checkpoint I/O
    def options(self):
        return dict(head=self.head_type, front_end=self.front_end,
                    hidden_size=self.encoder.config.hidden_size,
                    aasist_dims=asdict(self.aasist_dims) if self.aasist_dims else None,
                    gradient_checkpointing=self.gradient_checkpointing,
                    freeze_feature_encoder=self.freeze_feature_encoder)

    def save_pretrained(self, folder):
        """folder/encoder (HF safetensors folder), folder/head.safetensors, folder/classifier.json.
        Writes in place; a caller wanting atomic checkpoints writes to a temporary name and renames."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()},
                  str(folder / "head.safetensors"))
        (folder / "classifier.json").write_text(json.dumps(self.options(), indent=2) + "\n")

    @classmethod
    def load(cls, folder, **option_overrides):
        """Restore a folder written by save_pretrained exactly (encoder, head weights and buffers,
        options); gradient_checkpointing / freeze_feature_encoder may be overridden."""
        folder = Path(folder)
        meta_path = folder / "classifier.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found (not a saved SSLClassifier folder)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: line {e.lineno}: invalid JSON: {e.msg}") from None
        front_end = meta.get("front_end", "conv")
        weights = folder / "encoder" / "model.safetensors"
        try:
            if front_end == "logmel":  # no conv weights saved: build, swap, then load exactly
                config = Wav2Vec2Config.from_pretrained(folder / "encoder")
                encoder = Wav2Vec2Model(config)
                encoder.feature_extractor = LogMelFrontEnd(n_mels=config.conv_dim[-1])
                encoder.load_state_dict(load_file(str(weights)))
            else:
                encoder = Wav2Vec2Model.from_pretrained(folder / "encoder", dtype=torch.float32)
        except (OSError, RuntimeError, ValueError, SafetensorError) as e:  # truncated, corrupt
            raise ValueError(f"{weights}: cannot be loaded ({e})") from None
        if encoder.config.hidden_size != meta["hidden_size"]:
            raise ValueError(f"{meta_path}: hidden_size {meta['hidden_size']} but the encoder has "
                             f"{encoder.config.hidden_size}")
        dims = AASISTDims.from_dict(meta["aasist_dims"]) if meta["aasist_dims"] else None
        opts = dict(gradient_checkpointing=meta["gradient_checkpointing"],
                    freeze_feature_encoder=meta["freeze_feature_encoder"], **option_overrides)
        model = cls(encoder, head=meta["head"], aasist_dims=dims, front_end=front_end, **opts)
        head_path = folder / "head.safetensors"
        if not head_path.is_file():
            raise FileNotFoundError(f"{head_path} not found")
        try:
            model.head.load_state_dict(load_file(str(head_path)), strict=True)
        except (RuntimeError, OSError, SafetensorError) as e:
            raise ValueError(f"{head_path} does not match a {meta['head']!r} head, or is "
                             f"corrupt: {e}") from None
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise ValueError(f"{folder}: weights hold NaN or inf ({bad[0]}, ...)")
        return model

    def min_samples(self) -> int:
        """The shortest input that gives one frame: the front end's receptive field."""
        r = 1
        for k, stride in reversed(list(zip(self.encoder.config.conv_kernel,
                                           self.encoder.config.conv_stride))):
            r = (r - 1) * stride + k
        return r

    # ---------------------------------------------------------------- forward
    def forward(self, waveforms, lengths=None):
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (B, T), got shape {tuple(waveforms.shape)}")
        B, T = waveforms.shape
        device = waveforms.device
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=device)
        lengths = lengths.to(device=device, dtype=torch.long)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        frames = self.encoder._get_feat_extract_output_lengths(lengths)           # (B,)
        # one CPU-GPU sync point: a clip shorter than the conv receptive field gives no frame
        if bool(((lengths > T) | (frames < 1)).any()):
            raise ValueError(f"lengths must lie in [receptive field, T={T}] samples, got {lengths.tolist()}")
        sample_mask = torch.arange(T, device=device) < lengths[:, None]            # (B, T)
        x = normalize_waveforms(waveforms, sample_mask)
        # decision 2: group-norm conv stacks get no attention_mask
        attention_mask = sample_mask.long() if self.encoder.config.feat_extract_norm == "layer" else None
        hidden = self.encoder(x, attention_mask=attention_mask).last_hidden_state  # (B, F, D)
        frame_mask = torch.arange(hidden.shape[1], device=device) < frames[:, None]  # (B, F)
        pooled = masked_mean(hidden, frame_mask)                                     # (B, D)
        logits = self.head(pooled) if self.head_type == "linear" else self.head(hidden, frame_mask)
        return logits, pooled
