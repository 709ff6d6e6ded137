from igat.models.combiners import COMBINERS, EnsembleOutput, combine, log_output
from igat.models.ensemble import CombinedModel, Ensemble
from igat.models.resnet import ResNet20, count_parameters

__all__ = [
    "COMBINERS",
    "CombinedModel",
    "Ensemble",
    "EnsembleOutput",
    "ResNet20",
    "combine",
    "count_parameters",
    "log_output",
]
