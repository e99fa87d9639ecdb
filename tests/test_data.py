"""protocols.py, data.py and rawboost.py: every protocol format on small hand-written files, audio loading
against closed forms (sines, int16 scaling), crop / pad / chunk edge lengths, RawBoost."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import protocols
from protocols import Sample
from rawboost import RawBoostConfig, bandstop_fir, fir_filter, isd_additive_noise, rawboost

SR = 16000


def tone(n=400, sr=SR, f=440.0, amp=0.3):
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)


def write_audio(path, n=400, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(n, sr), sr)
    return path


def write_text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- readers

def test_asvspoof2019(tmp_path):
    for utt in ("LA_T_1138215", "LA_T_1271820", "LA_D_1000001"):
        write_audio(tmp_path / "flac" / f"{utt}.flac")
    proto = write_text(tmp_path / "p.txt", "LA_0079 LA_T_1138215 - - bonafide\n"
                       "LA_0079 LA_T_1271820 - A01 spoof\n\nLA_0080 LA_D_1000001 - A02 spoof\n")
    got = protocols.read_asvspoof2019(proto, tmp_path / "flac")
    assert got == [
        Sample(str(tmp_path / "flac/LA_T_1138215.flac"), "real", "-", "train", "asvspoof2019",
               {"speaker": "LA_0079"}),
        Sample(str(tmp_path / "flac/LA_T_1271820.flac"), "fake", "A01", "train", "asvspoof2019",
               {"speaker": "LA_0079"}),
        Sample(str(tmp_path / "flac/LA_D_1000001.flac"), "fake", "A02", "dev", "asvspoof2019",
               {"speaker": "LA_0080"}),
    ]
    # explicit split / source override what the ids say; Samples are hashable
    again = protocols.read_protocol("asvspoof2019", proto, tmp_path / "flac", split="x", source="syn")
    assert {s.split for s in again} == {"x"} and {s.source for s in again} == {"syn"}
    assert len(set(again)) == 3


def test_asvspoof2021_la_and_df(tmp_path):
    write_audio(tmp_path / "LA_E_9332881.flac")
    write_audio(tmp_path / "DF_E_2000013.flac")
    write_audio(tmp_path / "DF_E_2000014.flac")
    key = write_text(tmp_path / "key.txt",
                     "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n"
                     "LA_0043 DF_E_2000013 nocodec asvspoof A14 spoof notrim progress "
                     "traditional_vocoder - - - -\n"
                     "LA_0043 DF_E_2000014 mp3m4a vcc2020 bonafide bonafide notrim eval - - - - -\n")
    la, df, bona = protocols.read_asvspoof2021(key, tmp_path)
    assert (la.label, la.attack, la.split, la.source) == ("fake", "A07", "eval", "asvspoof2021")
    assert la.meta == {"speaker": "LA_0009", "codec": "alaw", "trim": "notrim", "phase": "eval",
                       "track": "LA", "transmission": "ita_tx"}
    assert (df.attack, df.meta["track"], df.meta["vocoder"], df.meta["corpus"]) == \
        ("A14", "DF", "traditional_vocoder", "asvspoof")
    assert df.meta["phase"] == "progress" and df.path == str(tmp_path / "DF_E_2000013.flac")
    assert (bona.label, bona.attack) == ("real", "-")


def test_asvspoof5(tmp_path):
    write_audio(tmp_path / "T_0000000000.flac")
    write_audio(tmp_path / "T_0000000001.flac")
    tsv = write_text(tmp_path / "ASVspoof5.train.tsv",
                     "T_4850 T_0000000000 F - - - AC3 A05 spoof -\n"
                     "T_1000 T_0000000001 M - - - bonafide bonafide bonafide -\n")
    spoof, bona = protocols.read_asvspoof5(tsv, tmp_path)
    assert (spoof.label, spoof.attack, spoof.split) == ("fake", "A05", "train")
    assert spoof.meta == {"speaker": "T_4850", "gender": "F", "codec": "-", "codec_q": "-",
                          "codec_seed": "-", "attack_tag": "AC3"}
    assert (bona.label, bona.attack, bona.meta["gender"]) == ("real", "-", "M")


def test_in_the_wild(tmp_path):
    write_audio(tmp_path / "0.wav")
    write_audio(tmp_path / "1.wav")
    meta = write_text(tmp_path / "meta.csv",
                      "file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,Alec Guinness,bona-fide\n")
    a, b = protocols.read_in_the_wild(meta)        # audio next to meta.csv by default
    assert a == Sample(str(tmp_path / "0.wav"), "fake", "-", "eval", "in_the_wild",
                       {"speaker": "Alec Guinness"})
    assert b.label == "real"
    # another audio folder
    write_audio(tmp_path / "other" / "0.wav")
    write_audio(tmp_path / "other" / "1.wav")
    assert protocols.read_in_the_wild(meta, tmp_path / "other")[0].path == str(tmp_path / "other/0.wav")


def test_fake_or_real(tmp_path):
    for name in ("b.wav", "a.flac"):
        write_audio(tmp_path / "testing" / "real" / name)
    write_audio(tmp_path / "testing" / "fake" / "z.wav")
    sf.write(str(tmp_path / "testing" / "fake" / "y.ogg"), tone(), SR)  # OGG Vorbis is kept
    write_text(tmp_path / "testing" / "fake" / "notes.txt", "ignored")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) .*\(\.txt\)"):
        got = protocols.read_fake_or_real(tmp_path)  # what is not audio is skipped, and counted
    assert [(Path(s.path).name, s.label, s.split) for s in got] == \
        [("a.flac", "real", "testing"), ("b.wav", "real", "testing"), ("y.ogg", "fake", "testing"),
         ("z.wav", "fake", "testing")]
    assert data.load_audio(got[2].path).shape == (400,)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert got == protocols.read_protocol("fake_or_real", tmp_path, split="testing")
    with pytest.raises(FileNotFoundError, match="validation"):
        protocols.read_fake_or_real(tmp_path, split="validation")
    (tmp_path / "training" / "real").mkdir(parents=True)
    (tmp_path / "training" / "fake").mkdir(parents=True)
    with pytest.raises(ValueError, match="no audio"):
        protocols.read_fake_or_real(tmp_path, split="training")


def test_add2023(tmp_path):
    write_audio(tmp_path / "wav" / "ADD2023_T1.2R1_E_00000001.wav")
    write_audio(tmp_path / "wav" / "ADD2023_T1.2R1_E_00000002.wav")
    lab = write_text(tmp_path / "label.txt", "ADD2023_T1.2R1_E_00000001.wav genuine\n"
                                             "ADD2023_T1.2R1_E_00000002.wav fake\n")
    a, b = protocols.read_add2023(lab, tmp_path / "wav")
    assert (a.label, a.split, a.attack, a.source) == ("real", "eval", "-", "add2023")
    assert b.label == "fake" and b.path.endswith("ADD2023_T1.2R1_E_00000002.wav")


def test_dfe2024(tmp_path):
    write_audio(tmp_path / "audio-data" / "a.wav")
    write_audio(tmp_path / "audio-data" / "b.flac")
    csv = write_text(tmp_path / "audio-metadata-publish.csv",
                     "Filename,Ground Truth,Finetuning Set,Language\n"
                     "a.wav,Fake,train,en\nb,Real,test,fr\nc.wav,Unknown,test,de\n")
    with pytest.warns(UserWarning, match="skipped 1 rows"):
        a, b = protocols.read_dfe2024(csv, tmp_path / "audio-data")
    assert (a.label, a.split, a.meta) == ("fake", "train", {"Language": "en"})
    assert (b.label, b.split, b.path) == ("real", "test", str(tmp_path / "audio-data/b.flac"))
    bad = write_text(tmp_path / "bad.csv", "Filename,Label\na.wav,Fake\n")
    with pytest.raises(ValueError, match="ground truth"):
        protocols.read_dfe2024(bad, tmp_path / "audio-data")


def test_manifest(tmp_path):
    write_audio(tmp_path / "audio" / "x.wav")
    absolute = write_audio(tmp_path / "elsewhere" / "y.wav")
    man = write_text(tmp_path / "dom.csv",
                     "path,label,attack,split,family,tags\n"
                     f"audio/x.wav,Bona-Fide,,train,,\n{absolute},spoof,G3,test,buzz,flat;robotic\n")
    x, y = protocols.read_manifest(man)
    assert x == Sample(str(tmp_path / "audio/x.wav"), "real", "-", "train", "dom",
                       {"family": "", "tags": ""})
    assert y == Sample(str(absolute), "fake", "G3", "test", "dom",
                       {"family": "buzz", "tags": "flat;robotic"})
    assert protocols.read_protocol("manifest", man, source="s")[0].source == "s"


def test_manifest_with_excel_bom(tmp_path):
    write_audio(tmp_path / "x.wav")
    man = tmp_path / "m.csv"
    man.write_bytes("path,label\nx.wav,fake\n".encode("utf-8-sig"))
    assert protocols.read_manifest(man)[0].label == "fake"


@pytest.mark.parametrize("reader,text,lineno", [
    ("asvspoof2019", "LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01\n", 2),
    ("asvspoof2021", "LA_0009 LA_E_1 alaw ita_tx A07 spoof notrim\n", 1),
    ("asvspoof5", "T_1 T_0 F - - - AC3 A05 spoof\n", 1),
    ("add2023", "a.wav genuine extra\n", 1),
    ("in_the_wild", "file,speaker,label\n0.wav,A,spoof\n1.wav,A\n", 3),
    ("manifest", "path,label\nx.wav,real,surplus\n", 2),
])
def test_malformed_line_names_file_and_line(tmp_path, reader, text, lineno):
    proto = write_text(tmp_path / "proto.txt", text)
    kw = {"audio_dir": tmp_path} if reader not in ("in_the_wild", "manifest") else {}
    with pytest.raises(ValueError, match=rf"proto\.txt:{lineno}:"):
        protocols.read_protocol(reader, proto, **kw)


@pytest.mark.parametrize("reader,text,lineno", [
    ("asvspoof2019", "LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01 fake\n", 2),
    ("asvspoof2021", "LA_0009 LA_E_1 alaw ita_tx A07 spoofed notrim eval\n", 1),
    ("asvspoof5", "T_1 T_0 F - - - AC3 A05 Spoof -\n", 1),
    ("add2023", "a.wav real\n", 1),
    ("in_the_wild", "file,speaker,label\n0.wav,A,bonafide\n", 2),
    ("dfe2024", "Filename,Ground Truth\na.wav,Real\nb.wav,maybe\n", 3),
    ("manifest", "path,label\nx.wav,genuine\n", 2),
])
def test_unknown_label_names_file_and_line(tmp_path, reader, text, lineno):
    proto = write_text(tmp_path / "proto.txt", text)
    kw = {"audio_dir": tmp_path} if reader not in ("in_the_wild", "manifest") else {}
    with pytest.raises(ValueError, match=rf"proto\.txt:{lineno}: unknown label"):
        protocols.read_protocol(reader, proto, **kw)


@pytest.mark.parametrize("reader", ["asvspoof2019", "asvspoof2021", "asvspoof5", "add2023",
                                    "in_the_wild", "dfe2024", "manifest"])
def test_missing_and_empty_protocol(tmp_path, reader):
    kw = {"audio_dir": tmp_path} if reader not in ("in_the_wild", "manifest") else {}
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        protocols.read_protocol(reader, tmp_path / "nope.txt", **kw)
    empty = write_text(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(ValueError, match="empty"):
        protocols.read_protocol(reader, empty, **kw)


def test_header_only_csv_is_empty(tmp_path):
    proto = write_text(tmp_path / "meta.csv", "file,speaker,label\n")
    with pytest.raises(ValueError, match="no entries"):
        protocols.read_in_the_wild(proto)


def test_missing_audio_error_or_counted_skip(tmp_path):
    write_audio(tmp_path / "LA_T_1.flac")
    proto = write_text(tmp_path / "p.txt", "S LA_T_1 - - bonafide\nS LA_T_2 - A01 spoof\n"
                                           "S LA_T_3 - A01 spoof\n")
    with pytest.raises(FileNotFoundError, match=r"p\.txt:2: audio file not found: .*LA_T_2\.flac"):
        protocols.read_asvspoof2019(proto, tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 .*LA_T_2\.flac"):
        kept = protocols.read_asvspoof2019(proto, tmp_path, missing="skip")
    assert [Path(s.path).name for s in kept] == ["LA_T_1.flac"]
    only_missing = write_text(tmp_path / "q.txt", "S LA_T_9 - A01 spoof\n")
    with pytest.raises(ValueError, match="no entry"), pytest.warns(UserWarning):
        protocols.read_asvspoof2019(only_missing, tmp_path, missing="skip")
    with pytest.raises(ValueError, match="missing must be"):
        protocols.read_asvspoof2019(proto, tmp_path, missing="ignore")


def test_read_protocol_dispatch_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown protocol kind"):
        protocols.read_protocol("asvspoof2077", tmp_path / "p.txt", tmp_path)
    with pytest.raises(ValueError, match="needs audio_dir"):
        protocols.read_protocol("asvspoof5", tmp_path / "p.txt")
    with pytest.raises(ValueError, match="takes no audio_dir"):
        protocols.read_protocol("manifest", tmp_path / "m.csv", tmp_path)


# ----------------------------------------------------------------------------- load_audio

def dominant_hz(x, sr):
    return np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x)


def test_load_audio_stereo_is_channel_mean(tmp_path):
    left, right = tone(800, f=300.0), tone(800, f=1000.0, amp=0.5)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], axis=1), SR, subtype="FLOAT")
    x = data.load_audio(tmp_path / "st.wav")
    assert x.dtype == np.float32 and x.shape == (800,)
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-7)


def test_load_audio_int16_scaling(tmp_path):
    sf.write(str(tmp_path / "i.wav"), np.array([16384, -32768, 0, 32767], dtype=np.int16), SR,
             subtype="PCM_16")
    np.testing.assert_array_equal(data.load_audio(tmp_path / "i.wav"),
                                  np.array([0.5, -1.0, 0.0, 32767 / 32768], dtype=np.float32))


@pytest.mark.parametrize("sr_in,f", [(8000, 440.0), (44100, 1000.0), (22050, 3000.0)])
def test_load_audio_resamples_periodic_sine_exactly(tmp_path, sr_in, f):
    # one second of a sine with an integer number of periods: band-limited and periodic, so
    # DFT resampling must reproduce sin(2 pi f t) sampled at 16 kHz (closed form)
    t = np.arange(sr_in) / sr_in
    sf.write(str(tmp_path / "s.wav"), 0.5 * np.sin(2 * np.pi * f * t), sr_in, subtype="FLOAT")
    x = data.load_audio(tmp_path / "s.wav")
    assert x.shape == (SR,)
    assert dominant_hz(x, SR) == f
    np.testing.assert_allclose(x, 0.5 * np.sin(2 * np.pi * f * np.arange(SR) / SR), atol=1e-5)
    with pytest.raises(ValueError, match=f"{sr_in} Hz"):
        data.load_audio(tmp_path / "s.wav", resample=False)


def test_resample_length_and_antialiasing():
    x = np.random.default_rng(0).standard_normal(44101)
    y = data.resample_fft(x, 44100, 16000)
    assert len(y) == round(44101 * 16000 / 44100) == 16000
    # a 7 kHz tone is kept at 16 kHz, a 9 kHz tone (above the new Nyquist) is removed, not aliased
    t = np.arange(44100) / 44100
    keep = data.resample_fft(np.sin(2 * np.pi * 7000 * t), 44100, 16000)
    drop = data.resample_fft(np.sin(2 * np.pi * 9000 * t), 44100, 16000)
    assert np.std(keep) == pytest.approx(np.sqrt(0.5), rel=1e-3) and np.std(drop) < 1e-5
    # up then down by 2 is the identity for a signal band-limited below the lower Nyquist
    z = np.sin(2 * np.pi * 50 * np.arange(1000) / 1000) + 0.3 * np.cos(2 * np.pi * 120 * np.arange(1000) / 1000)
    np.testing.assert_allclose(data.resample_fft(data.resample_fft(z, 1000, 2000), 2000, 1000),
                               z, atol=1e-5)


def test_load_audio_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        data.load_audio(tmp_path / "nothere.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 8)
    with pytest.raises(ValueError, match="junk.wav"):
        data.load_audio(tmp_path / "junk.wav")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="empty.wav has no samples"):
        data.load_audio(tmp_path / "empty.wav")


# ----------------------------------------------------------------------------- crop / pad / chunk

def test_random_crop_or_pad_edge_lengths():
    rng = np.random.default_rng(0)
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(data.random_crop_or_pad(x, 7, rng), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(data.random_crop_or_pad(x, 3, rng), x)    # exact: unchanged
    np.testing.assert_array_equal(data.random_crop_or_pad(x, 1, np.random.default_rng(0)),
                                  data.random_crop_or_pad(x, 1, np.random.default_rng(0)))
    long = np.arange(10.0)
    starts = set()
    for _ in range(200):
        c = data.random_crop_or_pad(long, 4, rng)
        assert len(c) == 4 and np.all(np.diff(c) == 1)                    # contiguous window
        starts.add(int(c[0]))
    assert starts == set(range(7))                                          # every offset 0..T-L
    with pytest.raises(ValueError):
        data.random_crop_or_pad(np.zeros(0), 4, rng)


def test_train_clip():
    rng = np.random.default_rng(1)
    for T in (3, 7):                                 # shorter than and exactly max_len: untouched
        x = np.arange(float(T))
        assert data.train_clip(x, rng, 5, 7) is x
    x = np.arange(20.0)
    lengths = set()
    for _ in range(300):
        c = data.train_clip(x, rng, 5, 7)
        assert np.all(np.diff(c) == 1) and 0 <= c[0] and c[-1] <= 19
        lengths.add(len(c))
    assert lengths == {5, 6, 7}
    with pytest.raises(ValueError):
        data.train_clip(x, rng, 8, 7)


@pytest.mark.parametrize("T,chunk,sizes", [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 4, [3]),
                                           (4, 4, [4])])
def test_chunk_audio(T, chunk, sizes):
    x = np.arange(float(T))
    chunks = data.chunk_audio(x, chunk)
    assert [len(c) for c in chunks] == sizes
    np.testing.assert_array_equal(np.concatenate(chunks), x)


# ----------------------------------------------------------------------------- RawBoost

def speech_like(n=8000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * env * (np.sin(2 * np.pi * 150 * t) + 0.5 * np.sin(2 * np.pi * 900 * t))
            + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("algo", range(1, 9))
def test_rawboost_seeded_same_length_finite(algo):
    x = speech_like()
    a = rawboost(x, algo, np.random.default_rng(7))
    b = rawboost(x, algo, np.random.default_rng(7))
    c = rawboost(x, algo, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == x.shape and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, x)


def test_rawboost_at_8khz_keeps_notches_below_nyquist():
    x = speech_like()
    for algo in (1, 3, 4):
        y = rawboost(x, algo, np.random.default_rng(3), sr=8000)
        assert y.shape == x.shape and np.isfinite(y).all()


def test_rawboost_algo0_and_bad_input():
    x = speech_like()
    np.testing.assert_array_equal(rawboost(x, 0, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="0..8"):
        rawboost(x, 9, np.random.default_rng(0))
    with pytest.raises(ValueError):
        rawboost(np.zeros((2, 5)), 1, np.random.default_rng(0))


def test_rawboost_ssi_snr_in_range():
    # algorithm 3 adds noise w = y - x; its SNR 20 log10(||x|| / ||w||) must lie in [10, 40] dB
    x = speech_like(16000).astype(np.float64)
    snrs = []
    for seed in range(20):
        w = rawboost(x, 3, np.random.default_rng(seed)).astype(np.float64) - x
        snrs.append(20 * np.log10(np.linalg.norm(x) / np.linalg.norm(w)))
    assert min(snrs) >= 10 - 0.01 and max(snrs) <= 40 + 0.01
    assert max(snrs) - min(snrs) > 10                         # drawn, not constant
    fixed = RawBoostConfig(SNRmin=20, SNRmax=20)
    w = rawboost(x, 3, np.random.default_rng(0), cfg=fixed).astype(np.float64) - x
    assert 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(w)) == pytest.approx(20, abs=0.01)


def test_rawboost_isd_touches_at_most_P_percent():
    x = 0.5 * speech_like(16000).astype(np.float64)    # peak < 1/3: x + 2 x f_r never clips
    assert np.abs(x).max() < 1 / 3
    for seed in range(10):
        y = isd_additive_noise(x, np.random.default_rng(seed), RawBoostConfig())
        changed = y != x
        assert changed.mean() <= 0.10
        assert np.all(np.abs(y - x) <= 2 * np.abs(x) + 1e-12)           # |g_sd x f_r| <= g_sd |x|


def test_bandstop_fir_against_dft():
    # evaluate H(f) = sum_n b[n] exp(-j 2 pi f n / sr) directly: the notch rejects its band
    # (Hamming transition width ~ 3.3 sr / K = 263 Hz, so the band is 600 Hz wide)
    b = bandstop_fir(201, 700.0, 1300.0, SR)
    n = np.arange(len(b))

    def H(f):
        return abs(np.sum(b * np.exp(-2j * np.pi * f * n / SR)))
    assert H(1000) < 0.01 and H(0) == pytest.approx(1, abs=0.01)
    assert H(3000) == pytest.approx(1, abs=0.01) and H(7000) == pytest.approx(1, abs=0.01)
    np.testing.assert_allclose(b, b[::-1], atol=1e-15)                  # linear phase
    # zero-delay filtering: a delta through the filter returns b centred on the delta
    d = np.zeros(401)
    d[200] = 1
    np.testing.assert_allclose(fir_filter(d, b), np.pad(b, 100), atol=1e-12)


# ----------------------------------------------------------------------------- batching

def test_collate_audio_and_labels():
    batch, lengths = data.collate_audio([np.ones(3), np.full(5, 2.0), np.array([7.0])])
    assert batch.dtype == torch.float32 and lengths.dtype == torch.long
    assert batch.shape == (3, 5) and lengths.tolist() == [3, 5, 1]
    assert batch.tolist() == [[1, 1, 1, 0, 0], [2, 2, 2, 2, 2], [7, 0, 0, 0, 0]]
    with pytest.raises(ValueError):
        data.collate_audio([])
    assert (data.label_to_index("fake"), data.label_to_index("real")) == (0, 1)
    with pytest.raises(ValueError):
        data.label_to_index("bonafide")


def test_segment_samples_keeps_the_last_segment_short():
    # AntiDeepfake's DFE24 segmentation: ceil(T / L) segments, the last one at its length
    s = Sample("a.wav", "fake", "A01", "test", "dfe")
    segs = data.segment_samples([s, s], 4.0, [9.0, 8.0])
    assert [x.meta["segment"] for x in segs] == [[0, 0.0, 4.0], [1, 4.0, 8.0], [2, 8.0, 9.0],
                                                 [0, 0.0, 4.0], [1, 4.0, 8.0]]
    assert all(x.label == "fake" and x.path == "a.wav" for x in segs)
    assert [x.meta["segment"] for x in data.segment_samples([s], 50.0, [3.2])] == [[0, 0.0, 3.2]]
    with pytest.raises(ValueError, match="positive"):
        data.segment_samples([s], 0, [1.0])
