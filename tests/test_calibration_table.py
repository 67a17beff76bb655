# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""The calibration table: quantile thresholds, anomalib's normalisation formula, fallbacks, resizing on load."""

from __future__ import annotations

import torch
from anomalib.post_processing import PostProcessor

from anomalib_pnpt.calibration_table import CalibrationTable, normalize, order_statistic


def test_order_statistic() -> None:
    assert float(order_statistic(torch.arange(1.0, 11.0), 0.9)) == 9.0
    assert float(order_statistic(torch.arange(1.0, 11.0), 1.0)) == 10.0


def test_normalize_reads_as_anomalibs() -> None:
    """Calibrated scores mean what they mean in anomalib: its formula, edge cases included."""
    torch.manual_seed(0)
    values = torch.randn(50) * 3
    cases = [
        (torch.tensor(-1.0), torch.tensor(2.0), torch.tensor(0.5)),
        (torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0)),  # no range
        (torch.tensor(float("nan")), torch.tensor(float("nan")), torch.tensor(0.3)),  # uncalibrated
        (torch.tensor(-2.0), torch.tensor(4.0), torch.tensor(float("nan"))),  # no threshold
    ]
    for low, high, threshold in cases:
        expected = PostProcessor._normalize(values, low, high, threshold)  # the reference implementation
        torch.testing.assert_close(normalize(values, low, high, threshold), expected, equal_nan=True)


def test_class_without_data_uses_the_overall_row_and_sizes_come_back_on_load() -> None:
    table = CalibrationTable(image_quantile=0.5)
    table.fit(torch.tensor([0, 0, 0, 0]), torch.tensor([1.0, 2.0, 3.0, 4.0]), None, num_classes=3)
    assert table.per_class.shape == (3, 6)
    assert float(table.lookup("image_threshold", torch.tensor([0]))) == 2.0
    assert float(table.lookup("image_threshold", torch.tensor([2]))) == 2.0  # NaN row -> overall (also 2.0)
    _, labels = table.calibrate(torch.tensor([2.5, 1.5]), torch.tensor([0, 2]), "image", 0.5)
    assert labels.tolist() == [True, False]
    table.append(torch.tensor([10.0, 20.0]), None)
    assert float(table.column("image_threshold")[3]) == 10.0
    table.remove(0)
    assert table.num_classes == 3
    restored = CalibrationTable()
    restored.load_state_dict(table.state_dict())
    torch.testing.assert_close(restored.per_class, table.per_class, equal_nan=True)
