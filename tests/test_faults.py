"""Bad input and faults end in a clear message or a correct result (the shared plumbing, the
data readers and the classifier route): non-finite values, config validation, resume guard
rails, protocol and audio edge cases. Each test feeds the fault and checks the message names
the culprit (file, line, field, step) or checks the result."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import protocols
import train
from classifier_experiment import check_resume
from models import SSLClassifier
from synth_speech import make_speech_corpora
from classifier_data import AudioSet
from train_classifier import ClassifierConfig, finetune

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    index = make_speech_corpora(root, seed=0, size="quick", annotate=False)
    spec = lambda name: dict(kind=index[name]["kind"], path=index[name]["path"],  # noqa: E731
                             audio_dir=index[name]["audio_dir"], name=name)
    return {name: AudioSet(spec(name), 16000) for name in ("target_train", "target_dev")}


def cfg_for(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path), batch_size=4, steps=4, lr=1e-3, num_generations=8,
                eval_every=2, train_min_sec=0.5, train_max_sec=0.7, old_refresh=3, device="cpu")
    return ClassifierConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- non-finite values

def test_nan_logits_stop_before_sampling_and_no_checkpoint_is_claimed(tmp_path, corpus,
                                                                      monkeypatch):
    original = SSLClassifier.forward

    def nan_logits(self, wav, lengths=None):
        logits, pooled = original(self, wav, lengths)
        return logits * float("nan"), pooled

    monkeypatch.setattr(SSLClassifier, "forward", nan_logits)
    with pytest.raises(train.NonFiniteLoss, match=r"a logit is nan at step 0.*No checkpoint "
                                                  r"had been written yet"):
        finetune(cfg_for(tmp_path), "grpo", tmp_path, corpus["target_train"],
                 corpus["target_dev"], "tiny-logmel")
    assert not (tmp_path / "last").exists()


def test_nan_gradient_stops_before_the_weights_change(tmp_path, corpus, monkeypatch):
    # a finite loss whose gradient is NaN: caught at the gradient norm, before opt.step,
    # and the message names the checkpoint of step 2 that was left intact
    calls = {"n": 0}
    original = torch.Tensor.backward

    def poisoned_backward(self, *a, **k):
        original(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:  # step 3's backward (steps 0, 1, 2)
            for p in model_params:
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
                    break

    model_params = []
    build = SSLClassifier.tiny_logmel

    def tracked(**kw):
        m = build(**kw)
        model_params.extend(m.parameters())
        return m

    monkeypatch.setattr("train_classifier.TINY", {"tiny-logmel": tracked})
    monkeypatch.setattr(torch.Tensor, "backward", poisoned_backward)
    with pytest.raises(train.NonFiniteLoss, match=r"gradient norm is nan at step 2; .*"
                                                  r"\(step 2\), was left intact"):
        finetune(cfg_for(tmp_path, steps=6), "sft", tmp_path, corpus["target_train"],
                 corpus["target_dev"], "tiny-logmel")
    saved = SSLClassifier.load(tmp_path / "last" / "model")  # finite, loadable
    assert all(torch.isfinite(p).all() for p in saved.parameters())


def test_non_finite_weights_are_never_saved_or_loaded(tmp_path):
    m = SSLClassifier.tiny_logmel()
    with torch.no_grad():
        m.head.weight[0, 0] = float("inf")
    with pytest.raises(train.NonFiniteLoss, match="weight head.weight is not finite at step 7"):
        train.check_weights(m, 7, tmp_path)
    m.save_pretrained(tmp_path / "bad")  # written by hand: loading it is refused
    with pytest.raises(ValueError, match="NaN or inf"):
        SSLClassifier.load(tmp_path / "bad")


def test_nan_audio_is_rejected_naming_the_file(tmp_path):
    x = np.zeros(1600, dtype=np.float32)
    x[100] = np.nan
    sf.write(tmp_path / "bad.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"bad\.wav holds 1 NaN or inf"):
        data.load_audio(tmp_path / "bad.wav")


def test_a_clip_too_short_for_the_model_is_named(tmp_path):
    for name, n in (("ok.wav", 8000), ("tiny.wav", 300)):
        sf.write(tmp_path / name, np.ones(n, dtype=np.float32) * 0.1, 16000)
    (tmp_path / "m.csv").write_text("path,label\nok.wav,real\ntiny.wav,fake\n")
    s = AudioSet(dict(kind="manifest", path=str(tmp_path / "m.csv")), 16000)
    with pytest.raises(ValueError, match=r"1 clip\(s\) shorter .* \(400 samples\).*tiny\.wav"):
        s.check(SSLClassifier.tiny_logmel(), scored=True)


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("recipe, message", [
    ({"quick": "false"}, r"quick: expected bool, got 'false' \(str\)"),
    ({"steps": None}, r"steps: expected int, got None"),
    ({"steps": 2.5}, r"steps: expected int, got 2\.5"),
    ({"lr": "1e-3"}, r"lr: expected float"),
    ({"steps": 0}, r"steps must be >= 1"),
    ({"batch_size": 0}, r"batch_size must be >= 1"),
    ({"eval_every": 0}, r"eval_every must be >= 1"),
    ({"num_generations": 1}, r"num_generations must be >= 2 for GRPO"),
    ({"methods": ["sft", "gpro"]}, r"unknown method\(s\) \['gpro'\]"),
    ({"adv_scale": "batchy"}, r"adv_scale must be one of"),
])
def test_recipe_values_are_checked_before_any_work(recipe, message):
    with pytest.raises(ValueError, match=message):
        train.config_from_args(ClassifierConfig, [], recipe)


def test_a_list_option_given_as_a_bare_word_is_refused():
    with pytest.raises(ValueError, match=r"methods: expected list, got 'sft'.*--methods"):
        train.config_from_args(ClassifierConfig, ["--methods", "sft"])
    assert train.config_from_args(ClassifierConfig, ["--methods", '["sft"]']).methods == ["sft"]


def test_quick_keeps_the_flags_the_user_gave(monkeypatch):
    seen = {}
    monkeypatch.setattr("classifier_experiment.run", lambda cfg: seen.setdefault("cfg", cfg))
    train.main(["--quick", "--steps", "9", "--num_generations", "4"])
    cfg = seen["cfg"]
    assert (cfg.quick, cfg.steps, cfg.num_generations, cfg.post_steps) == (True, 9, 4, 10)


def test_data_set_specs_are_checked(tmp_path, corpus):
    path = corpus["target_dev"].samples[0].path
    (tmp_path / "m.csv").write_text(f"path,label,split\n{path},real,train\n{path}x,fake,dev\n")
    shutil.copy(path, path + "x")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['splitt'\]"):
        AudioSet(dict(kind="manifest", path=str(tmp_path / "m.csv"), splitt="dev"), 16000)
    with pytest.raises(ValueError, match=r"holds the splits \['dev', 'train'\]: name the one"):
        AudioSet(dict(kind="manifest", path=str(tmp_path / "m.csv")), 16000)
    one = AudioSet(dict(kind="manifest", path=str(tmp_path / "m.csv"), split="dev"), 16000)
    with pytest.raises(ValueError, match="holds only fake trials"):
        one.check(SSLClassifier.tiny_logmel(), scored=True)


def test_a_missing_init_folder_is_named(tmp_path):
    from train_classifier import build_model
    with pytest.raises(FileNotFoundError, match="model folder not found: runs/nope/best"):
        build_model(ClassifierConfig(), "runs/nope/best")


# ----------------------------------------------------------------------------- resume

def test_resume_guard_rails(tmp_path, corpus, capsys):
    tr, dev = corpus["target_train"], corpus["target_dev"]
    run = tmp_path / "grpo"
    finetune(cfg_for(run, steps=4), "grpo", run, tr, dev, "tiny-logmel")
    # another method's checkpoint, another seed's: refused, naming both
    with pytest.raises(ValueError, match="written by a grpo run.*this is a sft run"):
        finetune(cfg_for(run, resume=str(run / "last")), "sft", run, tr, dev, "tiny-logmel")
    with pytest.raises(ValueError, match="seed=0.*seed=3"):
        finetune(cfg_for(run, seed=3, resume=str(run / "last")), "grpo", run, tr, dev,
                 "tiny-logmel")
    # metrics rows after the checkpoint's step (a run cut short) are dropped, not duplicated
    rows = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(rows + json.dumps({"step": 5, "loss": 1.0}) + "\n")
    shutil.copytree(run / "last", tmp_path / "keep")
    finetune(cfg_for(run, steps=6, lr=5e-4, resume=str(run / "last")), "grpo", run, tr, dev,
             "tiny-logmel")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
    # the lr given now is applied (and said), not the optimizer state's
    assert "learning rate 0.001 of the checkpoint replaced by 0.0005" in capsys.readouterr().out
    lrs = [json.loads(line).get("lr") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x for x in lrs if x][-1] == pytest.approx(5e-4)
    # a resume folder that is no stage of the run is never silently ignored
    with pytest.raises(ValueError, match="not the last/ checkpoint of a stage"):
        check_resume(cfg_for(run, resume=str(tmp_path / "keep")), [run])


def test_a_save_cut_between_its_two_renames_is_recovered(tmp_path, capsys):
    save = lambda p: (p.mkdir(), (p / "w").write_text("x"))  # noqa: E731
    train.save_checkpoint(tmp_path / "last", save, {"step": 2})
    # killed after `last` became `last.old` and before `last.tmp` became `last`
    train.save_checkpoint(tmp_path / "new", save, {"step": 4})
    os.replace(tmp_path / "last", tmp_path / "last.old")
    os.replace(tmp_path / "new", tmp_path / "last.tmp")
    folder = train.resolve_checkpoint(tmp_path / "last")
    assert train.last_step(folder) == 4 and "recovered it from" in capsys.readouterr().out
    # a state file that is truncated is named
    (folder / "trainer_state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"trainer_state\.pt: cannot be read"):
        train.load_trainer_state(folder)


def test_corrupt_weights_are_named(tmp_path):
    SSLClassifier.tiny_logmel().save_pretrained(tmp_path / "m")
    w = tmp_path / "m" / "encoder" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot be loaded"):
        SSLClassifier.load(tmp_path / "m")


# ----------------------------------------------------------------------------- protocols

def _audio(path):
    sf.write(path, np.zeros(800, dtype=np.float32) + 0.01, 16000)
    return path


def test_duplicate_trials_name_both_lines(tmp_path):
    for n in ("a", "b"):
        _audio(tmp_path / f"{n}.wav")
    (tmp_path / "meta.csv").write_text("file,speaker,label\na.wav,s,spoof\nb.wav,s,spoof\n"
                                       "a.wav,s,bona-fide\n")
    with pytest.raises(ValueError, match=r"meta\.csv: lines 2 and 4 both name .*a\.wav"):
        protocols.read_in_the_wild(tmp_path / "meta.csv")


def test_a_bom_is_accepted_in_every_text_format(tmp_path):
    _audio(tmp_path / "LA_T_1.flac")
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbfLA_0001 LA_T_1 - - bonafide\n")
    assert protocols.read_asvspoof2019(tmp_path / "p.txt", tmp_path)[0].label == "real"
    (tmp_path / "label.txt").write_bytes(b"\xef\xbb\xbfLA_T_1.flac genuine\n")
    assert protocols.read_add2023(tmp_path / "label.txt", tmp_path)[0].label == "real"


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path):
    _audio(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_bytes(b"path,label\na.wav,real\nb\xe9.wav,fake\n")
    with pytest.raises(ValueError, match=r"m\.csv:3: not UTF-8 text \(byte 0xe9 at column 2\)"):
        protocols.read_manifest(tmp_path / "m.csv")


# ----------------------------------------------------------------------------- chat routes

def _chat(tmp_path, **kw):
    from train_chat import ChatConfig, ChatExample, load_policy
    cfg = ChatConfig(device="cpu", num_generations=2, max_new_tokens=6, batch_size=2,
                     out_dir=str(tmp_path), **kw)
    examples = [ChatExample(None, f"question {i}", "real", target="real") for i in range(4)]
    return cfg, load_policy(cfg, "tiny", "text"), examples


def _reward(texts, examples, lengths):
    return torch.tensor([float(len(t) % 2) for t in texts]), {}


def test_chat_nan_logits_stop_before_the_loss(tmp_path):
    from train_chat import grpo_stage
    cfg, policy, examples = _chat(tmp_path)
    policy.model.lm_head.register_forward_hook(lambda module, inp, out: out * float("nan"))
    with pytest.raises(train.NonFiniteLoss, match=r"sampled token's log-prob is nan at step 0.*"
                                                  r"No checkpoint had been written yet"):
        grpo_stage(policy, examples, _reward, cfg, tmp_path / "g", 2)


def test_chat_stage_resume_refuses_another_kind_and_never_saves_nan(tmp_path):
    import dataclasses
    from train_chat import grpo_stage, sft_stage
    cfg, policy, examples = _chat(tmp_path)
    sft_stage(policy, examples, cfg, tmp_path / "s", 2)
    with pytest.raises(ValueError, match="written by a sft stage.*this is a grpo stage"):
        grpo_stage(policy, examples, _reward, dataclasses.replace(
            cfg, resume=str(tmp_path / "s" / "last")), tmp_path / "s", 3)
    # a blown-up weight is never written as a checkpoint
    import distributed
    from train_chat import _checkpoint, _setup
    _, opt, sched, _, _ = _setup(policy, cfg, tmp_path / "t", 3, "sft", distributed.Dist())
    with torch.no_grad():
        next(policy.model.parameters()).fill_(float("inf"))
    with pytest.raises(train.NonFiniteLoss, match=r"is not finite at step 3.*No checkpoint"):
        _checkpoint(policy, tmp_path / "t", opt, sched, 3, "sft", cfg, distributed.Dist())
    assert not (tmp_path / "t" / "last").exists()


@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_a_chat_stage_continued_from_its_last_equals_one_longer_stage(tmp_path, kind):
    """A stage of 2 steps continued with resume=its last/ (optimizer, scheduler and step; the
    weights stay in the policy) to step 4 ends where one stage of 4 steps ends, and logs the
    same rows (a chat stage writes last/ when it ends: this is how a run is extended)."""
    import dataclasses
    from train_chat import grpo_stage, sft_stage

    def run(policy, cfg, out, steps):
        if kind == "sft":
            sft_stage(policy, examples, cfg, out, steps)
        else:
            grpo_stage(policy, examples, _reward, cfg, out, steps)
    cfg, whole, examples = _chat(tmp_path, lr=1e-3, warmup_steps=3)
    run(whole, cfg, tmp_path / "whole", 4)
    _, cut, _ = _chat(tmp_path, lr=1e-3, warmup_steps=3)
    run(cut, cfg, tmp_path / "cut", 2)
    run(cut, dataclasses.replace(cfg, resume=str(tmp_path / "cut" / "last")), tmp_path / "cut", 4)
    _, start, _ = _chat(tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(whole.model.parameters(),
                                                     start.model.parameters()))  # it trained
    for (name, a), b in zip(whole.model.named_parameters(), cut.model.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    rows = {k: [{f: v for f, v in json.loads(r).items() if f != "time"} for r in
                (tmp_path / k / "metrics.jsonl").read_text().splitlines()] for k in ("whole", "cut")}
    # the lr logged after step k is step k + 1's: the warm-up carried across the cut
    assert rows["cut"] == rows["whole"] and [r["lr"] for r in rows["cut"]] == pytest.approx(
        [2e-3 / 3, 1e-3, 1e-3, 1e-3], abs=1e-6)


# ----------------------------------------------------------------------------- images

def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(data.load_image(tmp_path / "deep.png"))
    assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert 0 < np.mean(rgb == 255) < 0.05  # a ramp, not a white square


def test_bad_images_are_named_before_training_or_counted(tmp_path):
    from PIL import Image
    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])  # truncated
    paths = [str(tmp_path / "ok.png"), str(tmp_path / "cut.png")]
    with pytest.raises(ValueError, match=r"cannot read image .*cut\.png"):
        data.check_files(paths, data.load_image, what="image")
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 images .*cut\.png"):
        assert data.check_files(paths, data.load_image, skip=True, what="image") == paths[:1]


def test_a_face_manifest_is_checked_against_the_protocols_and_read_before_training(tmp_path):
    """A domain/split a protocol needs but the manifest lacks, then a truncated image: both are
    named by load_splits, before any model is built."""
    import fas_experiment as fx
    from PIL import Image
    keys = [(d, sp, lab, att) for d, sp in [("a", "train"), ("a", "dev"), ("b", "test")]
            for lab, att in [("real", "none"), ("fake", "print")]]
    for i in range(len(keys)):
        Image.new("RGB", (32, 32), (10, 20 * i, 30)).save(tmp_path / f"{i}.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "0.png").read_bytes()[:40])
    rows = ["path,label,attack,domain,split"] + [f"{i}.png,{lab},{att},{d},{sp}"
                                                 for i, (d, sp, lab, att) in enumerate(keys)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cfg = fx.FasConfig(manifest=str(tmp_path / "m.csv"), protocols={"a_to_c": ["a", "c"]})
    with pytest.raises(ValueError, match=r"m\.csv: the protocols need images of \['c/test'\]"):
        fx.load_splits(cfg)
    cfg = fx.FasConfig(manifest=str(tmp_path / "m.csv"), protocols={"a_to_b": ["a", "b"]})
    assert len(fx.load_splits(cfg)[("b", "test")]) == 2
    (tmp_path / "m.csv").write_text("\n".join(rows + ["cut.png,fake,print,b,test"]) + "\n")
    with pytest.raises(ValueError, match=r"cannot read image .*cut\.png"):
        fx.load_splits(cfg)


# ----------------------------------------------------------------------------- peft adapters

@pytest.mark.parametrize("field, value", [
    ("alpha_pattern", {"v_proj": 64}), ("rank_pattern", {"q_proj": 2}),
    ("layers_to_transform", [0]), ("exclude_modules", ["lm_head"]), ("lora_bias", True),
    ("modules_to_save", ["lm_head"]),
])
def test_peft_fields_this_loader_cannot_honour_are_named(tmp_path, field, value):
    from chat import ChatPolicy
    from lora import apply_lora, load_adapter, save_adapter
    policy = ChatPolicy.tiny("text")
    apply_lora(policy.model, 4, 8)
    save_adapter(policy.model, tmp_path / "a", "base")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(ValueError, match=f"field {field} = .* is not supported"):
        load_adapter(ChatPolicy.tiny("text").model, tmp_path / "a")


def test_peft_dotted_target_suffixes_are_named(tmp_path):
    from chat import ChatPolicy
    from lora import apply_lora, load_adapter, save_adapter
    policy = ChatPolicy.tiny("text")
    apply_lora(policy.model, 4, 8)
    save_adapter(policy.model, tmp_path / "a", "base")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["self_attn.q_proj"]
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="target_modules entry 'self_attn.q_proj' is a dotted"):
        load_adapter(ChatPolicy.tiny("text").model, tmp_path / "a")
