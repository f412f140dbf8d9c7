"""Speech recognition with CTC: spoken word sequences, synthesised on this machine, to text.

The data is made on the spot by the espeak-ng speech synthesiser (no download): utterances of
one to four words from a 30-word vocabulary (the ten digits and twenty command words), spoken
by several voices at several speeds and pitches. The model reads log-mel features and emits,
at every frame, a distribution over the words and the CTC blank:

    log-mel frames -> 2-layer bidirectional LSTM -> Linear -> log_softmax -> CTC loss

trained with Adam; greedy CTC decoding turns its output into words, and the word error rate
(WER: word substitutions + deletions + insertions over reference words) is measured on
held-out utterances spoken at speeds and pitches that training never heard.

    apt-get install espeak-ng        # Debian/Ubuntu (the synthesiser; 'brew install espeak-ng' on macOS)
    python examples/speech_ctc.py    # a few minutes on 2 CPU cores
    python examples/speech_ctc.py --train 2000 --epochs 30 --hidden 192   # better, slower

Features, computed with numpy alone: the 22.05 kHz waveform is cut into 25 ms Hann-windowed
frames every 10 ms, each frame's power spectrum (512-point FFT) is pooled by 40 triangular
filters spaced evenly on the mel scale (HTK's mel = 2595 log10(1 + f/700), 60 Hz to 8 kHz),
and its log is normalised per utterance (zero mean, unit variance per filter). Three
consecutive frames are stacked into one (120 features every 30 ms): a third of the steps
for the LSTM, and still several frames per spoken word, which is all CTC needs here.
"""
from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

import unet
import unet.functional as F
from unet import nn, optim
from unet.decoding import ctc_greedy_decode

DIGITS = "zero one two three four five six seven eight nine".split()
WORDS = ("yes no up down left right on off stop go open close start red green blue north south "
         "east west").split()
VOCAB = DIGITS + WORDS  # word k is label k + 1; label 0 is the CTC blank
VOICES = ["en-us", "en-us+f3", "en-gb+m3", "en-gb-scotland", "en-029+f2", "en-us+m7"]
# held out: test utterances use speeds and pitches between the training ones
TRAIN_SPEEDS, TEST_SPEEDS = (125, 155, 185), (140, 170)
TRAIN_PITCHES, TEST_PITCHES = (25, 50, 75), (38, 62)

RATE, N_FFT, WINDOW, HOP, N_MELS, STACK = 22050, 512, 551, 220, 40, 3


def require_espeak():
    if shutil.which("espeak-ng") is None:
        sys.exit("speech_ctc.py needs the espeak-ng speech synthesiser to make its data:\n"
                 "  apt-get install espeak-ng   (Debian/Ubuntu; 'brew install espeak-ng' on macOS)")


def synthesize(text, voice, speed, pitch):
    """espeak-ng's 16-bit mono 22.05 kHz waveform of ``text`` as float32 in [-1, 1]."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:  # streamed: the header's length is a placeholder
        if w.getframerate() != RATE or w.getsampwidth() != 2:
            raise RuntimeError(f"espeak-ng: expected 16-bit {RATE} Hz audio, got "
                               f"{8 * w.getsampwidth()}-bit {w.getframerate()} Hz")
        pcm = w.readframes(w.getnframes())
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def mel_filterbank(n_mels=N_MELS, n_fft=N_FFT, rate=RATE, fmin=60.0, fmax=8000.0):
    """(n_mels, n_fft // 2 + 1) triangular filters, centres evenly spaced on the mel scale."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


FILTERS = mel_filterbank()


def log_mel(samples):
    """(frames, N_MELS) normalised log-mel energies of a waveform (see the module docstring)."""
    samples = np.pad(samples, (0, max(0, WINDOW - len(samples))))
    count = 1 + (len(samples) - WINDOW) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW)[::HOP][:count]
    spectrum = np.fft.rfft(frames * np.hanning(WINDOW), n=N_FFT)  # the FFT crops to 512 points
    energies = np.log(np.abs(spectrum) ** 2 @ FILTERS.T + 1e-8)
    return (energies - energies.mean(0)) / (energies.std(0) + 1e-5)


def stack(features, k=STACK):
    """k consecutive frames side by side, every k-th frame: (frames // k, k * features)."""
    frames = len(features) // k * k
    return features[:frames].reshape(frames // k, k * features.shape[1])


def make_utterances(rng, count, speeds, pitches):
    utterances = []
    for _ in range(count):
        words = list(rng.choice(VOCAB, size=rng.integers(1, 5)))
        utterances.append((words, VOICES[rng.integers(len(VOICES))], int(rng.choice(speeds)),
                           int(rng.choice(pitches))))
    return utterances


def featurize(utterances, workers, desc):
    """Synthesise every utterance (espeak-ng processes in parallel) and compute its features."""
    def one(utterance):
        words, voice, speed, pitch = utterance
        return stack(log_mel(synthesize(" ".join(words), voice, speed, pitch))).astype(np.float32)

    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(one, utterances), total=len(utterances), desc=desc, unit="utt"))


class SpeechRecognizer(nn.Module):
    def __init__(self, features, hidden, classes):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, bidirectional=True, dropout=0.1)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, x, lengths):
        """x (time, batch, features) -> CTC log-probabilities (time, batch, classes)."""
        hidden, _ = self.lstm(x, lengths=lengths)
        return F.log_softmax(self.out(hidden), dim=-1)


def batches(features, labels, batch_size, rng=None):
    """Padded time-major batches of similar lengths (shuffled when ``rng`` is given)."""
    order = np.argsort([len(f) for f in features], kind="stable")
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    for group in groups:
        lengths = np.array([len(features[i]) for i in group])
        x = np.zeros((lengths.max(), len(group), features[0].shape[1]), np.float32)
        for j, i in enumerate(group):
            x[:lengths[j], j] = features[i]
        targets = [labels[i] for i in group]
        padded = np.zeros((len(group), max(map(len, targets))), np.int64)
        for j, t in enumerate(targets):
            padded[j, :len(t)] = t
        yield unet.tensor(x), padded, lengths, np.array([len(t) for t in targets]), group


def edit_distance(a, b):
    row = np.arange(len(b) + 1)
    for i, x in enumerate(a, 1):
        previous, row[0] = row.copy(), i
        for j, y in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (x != y))
    return int(row[-1])


def word_error_rate(model, features, labels, batch_size):
    errors, words, decoded = 0, 0, [None] * len(features)
    model.eval()
    with unet.no_grad():
        for x, _, lengths, _, group in batches(features, labels, batch_size):
            for i, hypothesis in zip(group, ctc_greedy_decode(model(x, lengths), lengths)):
                errors += edit_distance(labels[i], hypothesis)
                words += len(labels[i])
                decoded[i] = hypothesis
    model.train()
    return errors / words, decoded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=800, help="training utterances")
    parser.add_argument("--test", type=int, default=200, help="held-out utterances")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128, help="LSTM units per direction")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=2, help="espeak-ng processes at a time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    require_espeak()
    rng = np.random.default_rng(args.seed)
    unet.manual_seed(args.seed)

    started = time.perf_counter()
    train = make_utterances(rng, args.train, TRAIN_SPEEDS, TRAIN_PITCHES)
    test = make_utterances(rng, args.test, TEST_SPEEDS, TEST_PITCHES)
    train_x = featurize(train, args.workers, "synthesising training set")
    test_x = featurize(test, args.workers, "synthesising held-out set")
    to_labels = {word: k + 1 for k, word in enumerate(VOCAB)}
    train_y = [[to_labels[w] for w in words] for words, *_ in train]
    test_y = [[to_labels[w] for w in words] for words, *_ in test]
    print(f"{len(train_x)} training / {len(test_x)} held-out utterances, "
          f"{np.mean([len(f) for f in train_x]):.0f} feature frames on average "
          f"({time.perf_counter() - started:.0f} s)")

    model = SpeechRecognizer(train_x[0].shape[1], args.hidden, len(VOCAB) + 1)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(train_x) // args.batch_size)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
    for epoch in range(args.epochs):
        total = 0.0
        bar = tqdm(batches(train_x, train_y, args.batch_size, rng), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False)
        for x, targets, lengths, target_lengths, _ in bar:
            loss = ctc(model(x, lengths), targets, lengths, target_lengths)
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        wer, _ = word_error_rate(model, test_x, test_y, args.batch_size)
        print(f"epoch {epoch + 1}: CTC loss {total / steps_per_epoch:.3f}, held-out WER {100 * wer:.1f}%")

    wer, decoded = word_error_rate(model, test_x, test_y, args.batch_size)
    for i in range(min(5, len(test))):
        words, voice, speed, pitch = test[i]
        print(f"  [{voice}, speed {speed}, pitch {pitch}] said: {' '.join(words)!r}  "
              f"heard: {' '.join(VOCAB[k - 1] for k in decoded[i])!r}")
    print(f"held-out word error rate: {100 * wer:.1f}% over {sum(map(len, test_y))} words "
          f"({time.perf_counter() - started:.0f} s in all)")
    return wer


if __name__ == "__main__":
    main()
