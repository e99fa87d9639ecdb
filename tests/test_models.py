"""SSLClassifier and the AASIST head, on tiny offline models (no downloads)."""
import json
import math

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Model

from aasist import AASIST_TINY, AASISTHead, GraphPool, masked_bn
from models import (LogMelFrontEnd, SSLClassifier, masked_mean, mel_filterbank,
                    normalize_waveforms, score, small_wav2vec2_config, tiny_logmel_config,
                    tiny_wav2vec2_config)

SR = 16000


def _wave(n, seed):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g)


def _pad(waves):
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, :len(w)] = w
    return out, lengths


def _count_params(cfg):
    """Closed-form parameter count of a layer-norm, stable-layer-norm Wav2Vec2Model."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    n, prev = 0, 1
    for c, k in zip(cfg.conv_dim, cfg.conv_kernel):
        n += prev * c * k + c + 2 * c                       # conv weight + bias, LayerNorm
        prev = c
    n += 2 * prev + prev * H + H                            # projection LayerNorm + Linear
    K, G = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
    n += H * (H // G) * K + K + H                           # weight-normed grouped pos conv (g has K)
    n += 2 * H                                              # encoder LayerNorm
    n += cfg.num_hidden_layers * (4 * (H * H + H) + 2 * H + H * I + I + I * H + H + 2 * H)
    return n


def test_param_counts_and_frames():
    m = SSLClassifier.tiny()
    n_enc = sum(p.numel() for p in m.encoder.parameters())
    assert n_enc == _count_params(tiny_wav2vec2_config())
    assert 1e5 < n_enc < 1e6
    assert sum(p.numel() for p in m.head.parameters()) == 96 * 2 + 2
    assert 1e6 < _count_params(small_wav2vec2_config()) < 1e7
    # 1 s: (16000-10)//5+1 = 3199, (3199-8)//8+1 = 399, (399-8)//8+1 = 49 frames, like XLS-R
    assert int(m.encoder._get_feat_extract_output_lengths(torch.tensor(SR))) == 49


@pytest.mark.parametrize("head", ["linear", "aasist"])
def test_forward_shapes_and_lengths(head):
    m = SSLClassifier.tiny(head=head).eval()
    x, lengths = _pad([_wave(SR, 0), _wave(SR // 10, 1), _wave(SR, 2)])   # very different lengths
    with torch.no_grad():
        logits, pooled = m(x, lengths)
        assert logits.shape == (3, 2) and pooled.shape == (3, 96)
        assert torch.isfinite(logits).all()
        # exact-length batch: lengths == T is the same as no lengths
        full = torch.stack([_wave(SR, 3), _wave(SR, 4)])
        assert torch.allclose(m(full)[0], m(full, torch.tensor([SR, SR]))[0], atol=1e-6)
    with pytest.raises(ValueError):
        m(x[:, :300], torch.tensor([300, 300, 300]))          # shorter than the receptive field (325)
    with pytest.raises(ValueError):
        m(x, torch.tensor([SR + 1, 10, 10]))


def test_normalize_waveforms_against_numpy():
    x, lengths = _pad([_wave(700, 0) + 0.3, 2.0 * _wave(400, 1)])
    mask = torch.arange(x.shape[1]) < lengths[:, None]
    got = normalize_waveforms(x, mask).numpy()
    for i, n in enumerate(lengths.tolist()):
        v = x[i, :n].double().numpy()
        ref = (v - v.mean()) / np.sqrt(v.var() + 1e-7)
        np.testing.assert_allclose(got[i, :n], ref, atol=1e-5)
        assert (got[i, n:] == 0).all()


def test_pooled_is_mean_of_last_hidden_state_and_gain_invariant():
    m = SSLClassifier.tiny().eval()
    x = _wave(SR, 5)
    v = x.double().numpy()
    xn = torch.tensor((v - v.mean()) / np.sqrt(v.var() + 1e-7), dtype=torch.float32)
    with torch.no_grad():
        ref = m.encoder(xn[None]).last_hidden_state.mean(1)       # HF directly, no mask, all frames
        logits, pooled = m(x[None])
        assert torch.allclose(pooled, ref, atol=1e-5)
        assert torch.allclose(logits, m.head(ref), atol=1e-5)
        assert torch.allclose(m(3.0 * x[None])[0], logits, atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "aasist"])
def test_padding_does_not_change_a_clip(head):
    m = SSLClassifier.tiny(head=head)
    m.train()
    m(torch.stack([_wave(SR, 6), _wave(SR, 7), _wave(SR, 8)]))   # non-trivial BN running stats
    m.eval()
    x, y = _wave(9000, 9), _wave(SR, 10)
    with torch.no_grad():
        alone_logits, alone_pooled = m(x[None])
        batch, lengths = _pad([x, y])
        logits, pooled = m(batch, lengths)
    assert torch.allclose(pooled[0], alone_pooled[0], atol=1e-5)
    assert torch.allclose(logits[0], alone_logits[0], atol=1e-5)


def test_masked_mean_and_score_hand_worked():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(masked_mean(h, torch.tensor([[True, True, False]])), torch.tensor([[2.0, 3.0]]))
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])   # [fake, real]
    assert torch.allclose(score(logits), torch.tensor([0.75, 0.25]))
    assert torch.equal(SSLClassifier.score(logits), score(logits))
    m = SSLClassifier.tiny().eval()
    with torch.no_grad():
        p = score(m(torch.stack([_wave(SR, 11), _wave(SR, 12)]))[0])
    assert ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize("head", ["linear", "aasist"])
def test_save_load_roundtrip(tmp_path, head):
    m = SSLClassifier.tiny(head=head, freeze_feature_encoder=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():                          # weights the seed cannot reproduce
        for p in m.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    m.train()
    m(torch.stack([_wave(SR, 13), _wave(SR, 14)]))   # BN buffers move off their init
    m.eval()
    m.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "classifier.json").read_text())
    assert meta["head"] == head and meta["hidden_size"] == 96 and meta["freeze_feature_encoder"]
    r = SSLClassifier.load(tmp_path / "ckpt").eval()
    assert r.freeze_feature_encoder and r.aasist_dims == m.aasist_dims
    x, lengths = _pad([_wave(SR, 15), _wave(12000, 16)])
    with torch.no_grad():
        a, b = m(x, lengths), r(x, lengths)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        SSLClassifier.load(tmp_path)
    SSLClassifier.tiny().save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="use SSLClassifier.load"):
        SSLClassifier.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "classifier.json").write_text('{\n"head": "linear",\n oops}')
    with pytest.raises(ValueError, match="line 3"):
        SSLClassifier.load(tmp_path / "c")
    with pytest.raises(ValueError, match="head must be one of"):
        SSLClassifier.tiny(head="mlp")


def test_from_pretrained_plain_wav2vec2_folder(tmp_path):
    torch.manual_seed(3)
    enc = Wav2Vec2Model(tiny_wav2vec2_config(mask_time_prob=0.05))
    enc.save_pretrained(tmp_path / "ssl")
    m = SSLClassifier.from_pretrained(tmp_path / "ssl", head="aasist", aasist_dims=AASIST_TINY).eval()
    assert m.encoder.config.mask_time_prob == 0.0          # SpecAugment off by default
    ref = enc.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m.encoder.state_dict().items())
    on = SSLClassifier.from_pretrained(tmp_path / "ssl", mask_time_prob=0.05)
    assert on.encoder.config.mask_time_prob == 0.05
    with torch.no_grad():
        assert m(torch.stack([_wave(SR, 17), _wave(SR, 18)]))[0].shape == (2, 2)


def test_freeze_feature_encoder_freezes_exactly_the_conv_stack():
    m = SSLClassifier.tiny(freeze_feature_encoder=True)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    conv = {"encoder.feature_extractor." + n for n, _ in m.encoder.feature_extractor.named_parameters()}
    assert frozen == conv and len(conv) > 0
    m.train()
    m(torch.stack([_wave(SR, 19), _wave(SR, 20)]))[0].sum().backward()
    assert all(p.grad is None for n, p in m.named_parameters() if n in conv)
    assert m.encoder.feature_projection.projection.weight.grad.abs().sum() > 0
    m.configure(freeze_feature_encoder=False)
    assert all(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("head", ["linear", "aasist"])
def test_gradient_checkpointing_same_gradients(head):
    plain = SSLClassifier.tiny(head=head).train()
    ckpt = SSLClassifier.tiny(head=head, gradient_checkpointing=True).train()
    assert any(getattr(mod, "gradient_checkpointing", False) for mod in ckpt.encoder.modules())
    assert not any(getattr(mod, "gradient_checkpointing", False) for mod in plain.encoder.modules())
    x, lengths = _pad([_wave(SR, 21), _wave(10000, 22), _wave(SR, 23)])
    for model in (plain, ckpt):
        torch.manual_seed(0)                                 # same dropout masks in the AASIST head
        logits, pooled = model(x, lengths)
        (torch.log_softmax(logits, -1)[:, 1].sum() + pooled.square().mean()).backward()
    grads = dict(ckpt.named_parameters())
    for n, p in plain.named_parameters():
        assert torch.allclose(p.grad, grads[n].grad, atol=1e-6, rtol=1e-4), n


def test_aasist_head_backward_reaches_encoder():
    m = SSLClassifier.tiny(head="aasist").train()
    x, lengths = _pad([_wave(SR, 24), _wave(5000, 25)])
    logits, pooled = m(x, lengths)
    assert logits.shape == (2, 2) and pooled.shape == (2, 96)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert m.encoder.encoder.layers[0].attention.q_proj.weight.grad.abs().sum() > 0
    assert m.encoder.feature_extractor.conv_layers[0].conv.weight.grad.abs().sum() > 0
    assert m.head.out.weight.grad.abs().sum() > 0
    head = AASISTHead(16, AASIST_TINY).eval()
    assert head(torch.randn(3, 30, 16)).shape == (3, 2)
    with pytest.raises(ValueError, match=">= 3 SSL frames"):
        head(torch.randn(2, 30, 16), torch.arange(30) < torch.tensor([[30], [2]]))


def test_masked_bn_matches_batchnorm2d_on_the_valid_part():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 6, generator=g)                 # (B, C, S, T); clip 1 has 4 valid steps
    mask = torch.arange(6) < torch.tensor([[6], [4]])
    bn1, bn2 = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm2d(3)
    out = masked_bn(bn1, x, mask, -1)
    valid = torch.cat([x[0].reshape(3, -1), x[1, :, :, :4].reshape(3, -1)], 1)  # (C, n)
    ref = bn2(valid[None, :, :, None])[0, :, :, 0]         # BatchNorm2d over the valid positions
    got = torch.cat([out[0].reshape(3, -1), out[1, :, :, :4].reshape(3, -1)], 1)
    assert torch.allclose(got, ref, atol=1e-5)
    assert (out[1, :, :, 4:] == 0).all()
    assert torch.allclose(bn1.running_mean, bn2.running_mean)
    assert torch.allclose(bn1.running_var, bn2.running_var)


def test_graph_pool_keeps_floor_ratio_of_valid_nodes_per_clip():
    pool = GraphPool(0.5, 4).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 4, generator=g)
    mask = torch.arange(7) < torch.tensor([[7], [4]])
    with torch.no_grad():
        out, keep = pool(x, mask)
        s = torch.sigmoid(pool.proj(x))[..., 0].numpy()     # (2, 7) node scores
    assert keep.tolist() == [[True, True, True], [True, True, False]]  # floor(3.5) = 3, floor(2) = 2
    for i, (n, k) in enumerate([(7, 3), (4, 2)]):         # numpy: top-k valid nodes, scaled by score
        idx = np.argsort(-s[i, :n])[:k]
        ref = x[i, idx].numpy() * s[i, idx, None]
        np.testing.assert_allclose(out[i, :k].numpy(), ref, atol=1e-6)


def test_group_norm_config_gets_no_attention_mask():
    cfg = tiny_wav2vec2_config(feat_extract_norm="group", do_stable_layer_norm=False)
    m = SSLClassifier.from_config(cfg).eval()
    seen = []
    m.encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    x, lengths = _pad([_wave(SR, 26), _wave(8000, 27)])
    with torch.no_grad():
        assert m(x, lengths)[0].shape == (2, 2)
    assert seen == [None]


# ---------------------------------------------------------------- the log-mel stand-in

def test_mel_filterbank_triangles():
    fb = mel_filterbank(16, 512, SR)                        # (16, 257)
    mel = lambda f: 2595 * math.log10(1 + f / 700)          # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)             # noqa: E731
    centres = [hz(mel(SR / 2) * k / 17) for k in range(18)]
    bins = np.linspace(0, SR / 2, 257)
    for m in range(16):
        # zero outside (centre m-1, centre m+1), the triangle's value in between
        inside = (bins > centres[m]) & (bins < centres[m + 2])
        assert (fb[m].numpy()[~inside] == 0).all()
        f = bins[inside]
        tri = np.minimum((f - centres[m]) / (centres[m + 1] - centres[m]),
                         (centres[m + 2] - f) / (centres[m + 2] - centres[m + 1]))
        np.testing.assert_allclose(fb[m].numpy()[inside], tri, rtol=1e-5, atol=1e-6)
    # between the first and the last centre the triangles sum to 1 (a partition of unity)
    mid = (bins >= centres[1]) & (bins <= centres[16])
    np.testing.assert_allclose(fb.sum(0).numpy()[mid], 1.0, atol=1e-5)


def test_log_mel_front_end_frames_and_a_tone():
    fe = LogMelFrontEnd(n_mels=64)
    t = torch.arange(SR) / SR
    x = torch.sin(2 * math.pi * 2000 * t)[None]             # 1 s, 2 kHz
    out = fe(x)                                              # (1, 64, F)
    enc = Wav2Vec2Model(tiny_logmel_config())
    assert out.shape[-1] == int(enc._get_feat_extract_output_lengths(torch.tensor(SR))) == 49
    # the loudest band is the one whose triangle covers 2 kHz most
    k = int(round(2000 / (SR / 2) * 256))
    assert int(out[0, :, 10].argmax()) == int(mel_filterbank(64, 512, SR)[:, k].argmax())
    # digital silence sits at the floor, far below a -65 dB noise floor
    quiet = fe(torch.zeros(1, SR)), fe(10 ** (-65 / 20) * torch.randn(1, SR))
    assert quiet[0].max() == pytest.approx(math.log(1e-9)) and quiet[1].mean() > quiet[0].max() + 5


def test_tiny_logmel_saves_and_loads_exactly(tmp_path):
    m = SSLClassifier.tiny_logmel(seed=3).eval()
    assert not any("feature_extractor" in k for k in m.state_dict())  # nothing learned there
    m.save_pretrained(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "classifier.json").read_text())["front_end"] == "logmel"
    r = SSLClassifier.load(tmp_path / "c").eval()
    assert isinstance(r.encoder.feature_extractor, LogMelFrontEnd)
    x, lengths = _pad([_wave(SR, 0), _wave(SR // 2, 1)])
    with torch.no_grad():
        torch.testing.assert_close(r(x, lengths)[0], m(x, lengths)[0], rtol=0, atol=0)
