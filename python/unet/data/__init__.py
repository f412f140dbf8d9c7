"""unet.data: text -> ids -> batches.

    normalise    Normalizer / preprocess           (text.py)
    tokenize     CharTokenizer, WordTokenizer, BPETokenizer   (tokenizers.py)
    number       Vocab (pad 0, unk 1, bos 2, eos 3)             (vocab.py)
    all three    TextEncoder, saved as JSON                      (encoder.py)
    data sets    TextLineDataset, PairDataset, LabeledDataset   (datasets.py)
    batches      pad_batch, sequence_mask, DataLoader           (loader.py)
    toy tasks    dates_task, numbers_task                       (synthetic.py)
"""
from .datasets import Dataset, LabeledDataset, PairDataset, TextLineDataset, read_lines
from .encoder import TextEncoder
from .loader import DataLoader, batch_indices, collate, pad_batch, sequence_mask
from .synthetic import dates_task, number_words, numbers_task
from .text import Normalizer, preprocess
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, get_tokenizer
from .vocab import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, Vocab

__all__ = [
    "Normalizer", "preprocess",
    "Tokenizer", "CharTokenizer", "WordTokenizer", "BPETokenizer", "get_tokenizer",
    "Vocab", "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "SPECIAL_TOKENS",
    "TextEncoder",
    "Dataset", "TextLineDataset", "PairDataset", "LabeledDataset", "read_lines",
    "pad_batch", "sequence_mask", "batch_indices", "collate", "DataLoader",
    "dates_task", "numbers_task", "number_words",
]
