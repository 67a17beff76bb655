# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Per-class, threshold-free evaluation of any anomalib model on multi-class data."""

from anomalib_pnpt.evaluation.metrics import auroc, average_precision, f1_max, f1_score, pro_curve, pro_score
from anomalib_pnpt.evaluation.per_class import METRICS, PerClassEvaluation, evaluate_per_class, format_table
from anomalib_pnpt.evaluation.retrieval_accuracy import RetrievalAccuracy

__all__ = [
    "METRICS",
    "PerClassEvaluation",
    "RetrievalAccuracy",
    "auroc",
    "average_precision",
    "evaluate_per_class",
    "f1_max",
    "f1_score",
    "format_table",
    "pro_curve",
    "pro_score",
]
