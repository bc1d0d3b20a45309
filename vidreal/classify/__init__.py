"""Image classification for the VisDA protocol: a frozen timm backbone + the report's head.

    from vidreal.classify import train, evaluate, compare
    result = train("out/sd_cn", "visda/validation/image_list.txt", "runs/sd_cn", epochs=7)
    print(evaluate("runs/sd_cn", "visda/test/image_list.txt").table)

Modules: ``data`` (class folders and list files), ``model`` (backbone + head), ``features``
(feature cache), ``run`` (settings, run folder save/load), ``scores`` (confusion matrix,
per-class accuracy, the table), ``train`` (train_one_epoch / validate / train), ``evaluate``
(evaluate a run, confusion PNG, compare).
"""
from vidreal.classify.data import VISDA_CLASSES, ImageDataset, Samples, load_samples
from vidreal.classify.evaluate import EvalResult, compare, evaluate, plot_confusion
from vidreal.classify.model import Classifier, create_backbone, make_head, make_transform
from vidreal.classify.run import TrainConfig, load_run, load_train_config
from vidreal.classify.scores import confusion_matrix, format_table, per_class_accuracy
from vidreal.classify.train import TrainResult, train, train_one_epoch, validate

__all__ = [
    "VISDA_CLASSES", "ImageDataset", "Samples", "load_samples",
    "EvalResult", "compare", "confusion_matrix", "evaluate", "format_table", "per_class_accuracy", "plot_confusion",
    "Classifier", "create_backbone", "make_head", "make_transform",
    "TrainConfig", "TrainResult", "load_run", "load_train_config", "train", "train_one_epoch", "validate",
]
