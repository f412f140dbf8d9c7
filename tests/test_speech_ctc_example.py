"""examples/speech_ctc.py: its numpy front end (mel filterbank, log-mel features, frame
stacking), its word error rate, and a tiny end-to-end run where espeak-ng is installed."""
import importlib.util
import pathlib
import shutil

import numpy as np
import pytest

PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "speech_ctc.py"
spec = importlib.util.spec_from_file_location("speech_ctc", PATH)
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)


def test_mel_filterbank():
    filters = example.mel_filterbank(n_mels=10, n_fft=512, rate=16000, fmin=0.0, fmax=8000.0)
    assert filters.shape == (10, 257) and (filters >= 0).all() and filters.max() <= 1.0
    peaks = filters.argmax(axis=1)
    assert (np.diff(peaks) > 0).all()                      # centres rise with the filter index
    assert (np.diff(np.diff(peaks)) >= -1).all()           # and spread out (the mel scale)
    assert (filters.sum(axis=0)[peaks[0]:peaks[-1]] > 0.99).all()  # neighbours overlap to cover


def test_log_mel_of_a_tone_peaks_in_its_filter():
    rate, tone = example.RATE, 1000.0
    samples = np.sin(2 * np.pi * tone * np.arange(rate) / rate).astype(np.float32)
    features = example.log_mel(samples)
    assert features.shape == (1 + (rate - example.WINDOW) // example.HOP, example.N_MELS)
    np.testing.assert_allclose(features.mean(0), 0, atol=1e-4)  # normalised per filter
    raw = np.log(np.abs(np.fft.rfft(samples[:example.WINDOW] * np.hanning(example.WINDOW), n=example.N_FFT)) ** 2
                 @ example.FILTERS.T + 1e-8)
    centre = np.fft.rfftfreq(example.N_FFT, 1 / rate)[example.FILTERS.argmax(axis=1)]
    assert abs(centre[raw.argmax()] - tone) < 150
    stacked = example.stack(features)
    assert stacked.shape == (len(features) // 3, 3 * example.N_MELS)
    np.testing.assert_array_equal(stacked[1, example.N_MELS:2 * example.N_MELS], features[4])


def test_edit_distance():
    assert example.edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert example.edit_distance([1, 2, 3], [1, 3]) == 1
    assert example.edit_distance([1, 2, 3], [4, 1, 2, 3, 5]) == 2
    assert example.edit_distance([], [1, 2]) == 2
    assert example.edit_distance([1, 2], [2, 1]) == 2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")
def test_tiny_run():
    wer = example.main(["--train", "16", "--test", "4", "--epochs", "1", "--hidden", "8"])
    assert np.isfinite(wer) and wer >= 0.0  # one epoch learns little: the run must complete and score
