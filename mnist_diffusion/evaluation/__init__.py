"""Evaluation: sample a pipeline class by class and score accuracy, classifier FID, precision/recall, CLIP, style."""

from ..lazy_import import lazy_exports

# Each submodule is imported when one of its names is first read: `CONDITIONINGS` costs the CLI no torch import.
_STRUCTURE = {
    "classifiers": ["SHIPPED_CLASSIFIERS", "class_names_and_classifier", "default_classifier"],
    "conditioning": ["CONDITIONINGS", "resolve_conditioning"],
    "results": [
        "QUANTILES",
        "AttributeDistribution",
        "EvaluationResult",
        "StyleControlResult",
        "StyleRequestResult",
        "mean_and_range",
    ],
    "sampling": ["SamplingSettings", "class_prompt", "sample_batches"],
    "scoring": ["ReferenceFeatures", "evaluate", "score_samples"],
    "styles": ["STYLE_ATTRIBUTES", "STYLE_REQUESTS", "measure_style_control", "style_agreement", "style_prompt"],
}
__getattr__, __dir__ = lazy_exports(__name__, _STRUCTURE)
__all__ = sorted(name for names in _STRUCTURE.values() for name in names)
