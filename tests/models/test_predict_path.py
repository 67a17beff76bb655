# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""``engine.predict`` / ``anomalib predict`` decide like the model's forward (and so like its export)."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch

from tests.calibrated_models import calibrated_model, class_images


@pytest.mark.parametrize("name", ["Pnpt", "OneNip"])
def test_predict_step_uses_the_per_class_calibration(name: str) -> None:
    model = calibrated_model(name)
    images = class_images([0, 1, 2, 0, 1, 2], seed=1)
    with torch.no_grad():
        forward = model(images)
        # What Lightning does for engine.predict on a stock anomalib batch (anomalib predict's PredictDataset):
        # the batch hook, the predict step, then the post-processor's batch hook.
        batch = model.on_after_batch_transfer(ImageBatch(image=model.pre_processor.transform(images)), 0)
        outputs = model.predict_step(batch, 0)
        model.post_processor.on_predict_batch_end(None, model, outputs, batch, 0)
    # One object for the step and every callback (anomalib's visualizer reads the batch), the class a field of it.
    assert outputs is batch
    assert torch.equal(outputs.pred_category_id, forward.pred_category_id)
    assert torch.equal(outputs.pred_unknown, forward.pred_unknown)
    assert torch.equal(outputs.pred_label.reshape(-1), forward.pred_label.reshape(-1))
    assert torch.allclose(outputs.pred_score.reshape(-1), forward.pred_score.reshape(-1), atol=1e-4)
    assert torch.equal(outputs.pred_mask, forward.pred_mask.reshape(outputs.pred_mask.shape))
