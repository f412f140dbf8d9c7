"""Ready models built from unet's layers.

``UNet``, the high-level encoder-decoder over feature sequences, and the NLP task models,
which all follow the ``TaskModel`` protocol (``models/base.py``) on the fused recurrent layers:

    Seq2Seq         task "translate"   translation, summarising (attention: general/dot/additive)
    TextClassifier  task "classify"    one label per text (TextCNN: Kim 2014's convolutional one)
    LanguageModel   task "lm"          next-token prediction, sampling
    SequenceTagger  task "tag"         one label per token

``TASK_MODELS`` maps each task name to its class (``TASK_MODELS[task].from_config(cfg)``).
``ImageCNN`` classifies images (conv-BN-ReLU-pool blocks, global pooling, linear).
"""
from .attention import Attention, BahdanauAttention, LuongAttention
from .base import TaskModel
from .classifier import Classifier, TextClassifier
from .image_cnn import ImageCNN
from .language_model import LanguageModel
from .seq2seq import Seq2Seq
from .tagger import SequenceTagger
from .text_cnn import TextCNN
from .unet import UNet

TASK_MODELS = {cls.task: cls for cls in (Seq2Seq, TextClassifier, LanguageModel, SequenceTagger)}

__all__ = ["UNet", "TaskModel", "Seq2Seq", "TextClassifier", "LanguageModel", "SequenceTagger", "Attention",
           "LuongAttention", "BahdanauAttention", "TASK_MODELS", "Classifier", "TextCNN", "ImageCNN"]
