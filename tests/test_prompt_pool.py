# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""PromptPool: class means, cosine retrieval, checkpoint resizing, identical pools under DDP (gloo), and the
fixed-order loader the pool and calibrations are built from."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from anomalib_pnpt.prompt_pool import PromptPool, PromptPoolNotBuiltError, pool_dataloader


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    keys = torch.randn(8, 5, generator=generator) + 4 * torch.nn.functional.one_hot(ids, 5)
    maps = torch.randn(8, 3, 4, 4, generator=generator)
    return ids, keys, maps


def _build(ids: torch.Tensor, keys: torch.Tensor, maps: torch.Tensor) -> PromptPool:
    pool = PromptPool(num_prompts=1)
    pool.begin(3, 5, [(3, 4, 4)])
    pool.accumulate(ids, keys, [maps])
    pool.finish()
    return pool


def test_pool_holds_class_means_and_retrieves_by_cosine() -> None:
    ids, keys, maps = _data()
    pool = _build(ids, keys, maps)
    for c in range(3):
        assert torch.allclose(pool.keys[c], keys[ids == c].mean(0))
        assert torch.allclose(pool.prompts[0][c], maps[ids == c].mean(0))
    retrieved, prompts, _, unknown = pool.retrieve(keys)
    assert not unknown.any()  # the training images themselves are of known classes
    assert torch.equal(retrieved, ids)
    assert torch.allclose(prompts[0], pool.prompts[0][ids])
    assert pool.counts.tolist() == [3, 3, 2]


def test_unbuilt_pool_fails_clearly() -> None:
    with pytest.raises(PromptPoolNotBuiltError, match="Train the model"):
        PromptPool().check_built()


def test_class_without_samples_is_an_error() -> None:
    pool = PromptPool()
    pool.begin(2, 2, [(1,)])
    pool.accumulate(torch.tensor([0]), torch.ones(1, 2), [torch.ones(1, 1)])
    with pytest.raises(PromptPoolNotBuiltError, match=r"classes \[1\]"):
        pool.finish()


def test_state_dict_round_trip_resizes_empty_pool() -> None:
    pool = _build(*_data())
    fresh = PromptPool(num_prompts=1)
    fresh.load_state_dict(pool.state_dict())
    assert bool(fresh.built)
    assert torch.equal(fresh.prompts[0], pool.prompts[0])


def test_pool_marks_which_classes_the_network_trained_with() -> None:
    ids, keys, maps = _data()
    pool = _build(ids, keys, maps)
    assert pool.trained.tolist() == [True, True, True]  # built for training
    pool.append(keys[:1], [maps[:1]], torch.ones(1))  # added afterwards: not trained on
    pool.append(keys[1:2], [maps[1:2]], torch.ones(1), trained=True)
    assert pool.trained.tolist() == [True, True, True, False, True]
    pool.remove_class(1)
    assert pool.trained.tolist() == [True, True, False, True]
    fresh = PromptPool(num_prompts=1)
    fresh.load_state_dict(pool.state_dict())  # the flags are saved with the pool
    assert fresh.trained.tolist() == [True, True, False, True]


def test_routing_reads_each_retrieved_classs_own_flag_with_several_entries_per_class() -> None:
    pool = PromptPool(num_prompts=1, entries_per_class=2)
    keys = torch.eye(4)
    pool.set_entries(torch.tensor([0, 0, 1, 1]), keys, [torch.zeros(4, 1)])
    pool.append(torch.eye(4)[:2], [torch.zeros(2, 1)], torch.ones(2))  # class 2, added: not trained on
    class_ids = torch.tensor([2, 0, 1])
    network = (torch.zeros(3, 1, 2, 2), torch.zeros(3))
    prompt_only = (torch.ones(3, 1, 2, 2), torch.ones(3))
    anomaly_map, score = pool.route_untrained_classes(class_ids, network, prompt_only)
    assert score.tolist() == [1.0, 0.0, 0.0]
    assert anomaly_map.flatten(1).amax(1).tolist() == [1.0, 0.0, 0.0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    ids, keys, maps = _data()
    shard = slice(rank, None, world_size)  # each rank sees a different half of the data
    pool = PromptPool(num_prompts=1)
    pool.begin(3, 5, [(3, 4, 4)])
    pool.accumulate(ids[shard], keys[shard], [maps[shard]])
    pool.finish(reduce_across_ranks=True)
    torch.save(pool.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_process_gloo_build_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _build(*_data()).state_dict()
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # Every training image's key too (the unknown-class rule's), gathered from both ranks' halves.
        assert state["unknown_class.keys"].shape == single["unknown_class.keys"].shape
        for name, tensor in single.items():
            assert torch.allclose(state[name].float(), tensor.float(), atol=1e-6), (rank, name)


def _indices(loader: DataLoader) -> list[int]:
    return [int(index) for batch in loader for index in batch]


def test_pool_dataloader_shares_partition_the_images_in_a_fixed_order() -> None:
    """Ranks' shares cover every image once whatever the training loader's shuffle; a limit spreads evenly."""
    train_loader = DataLoader(list(range(30)), batch_size=4, shuffle=True)
    shares = [_indices(pool_dataloader(train_loader, rank, 3)) for rank in range(3)]
    assert sorted(index for share in shares for index in share) == list(range(30))
    assert shares[1] == _indices(pool_dataloader(train_loader, 1, 3))  # the same again: no shuffle
    # 30 images listed class after class (10 each): 6 evenly spaced ones include every class.
    limited = _indices(pool_dataloader(train_loader, limit=6))
    assert limited == [0, 6, 12, 17, 23, 29]
    assert {index // 10 for index in limited} == {0, 1, 2}


def test_pool_build_reports_progress(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from types import SimpleNamespace

    from anomalib_pnpt.prompt_pool import preprocessed_batches

    batches = [
        SimpleNamespace(image=torch.rand(2, 3, 8, 8), category_id=torch.tensor([0, 1]), image_path=["a", "b"])
        for _ in range(3)
    ]
    module = SimpleNamespace(pre_processor=None, device=torch.device("cpu"))

    class Loader(list):
        dataset = tuple(range(6))

    with caplog.at_level(logging.INFO, logger="anomalib_pnpt.prompt_pool"):
        assert len(list(preprocessed_batches(Loader(batches), module, progress_every_s=0))) == 3
    assert "Building the prompt pool: 6 / 6 training images" in caplog.text


def test_the_model_owns_its_pool_and_rebuilds_it_on_request(demo_root: Path, tmp_path: Path) -> None:
    """From Python (``fill_prompt_pool``) and when training starts; a built pool is kept unless a rebuild is asked."""
    from anomalib.engine import Engine

    from anomalib_pnpt import Pnpt
    from anomalib_pnpt.data import MultiClassMVTecAD

    def datamodule(categories: list[str]) -> MultiClassMVTecAD:
        data = MultiClassMVTecAD(root=demo_root, categories=categories, num_workers=0, train_batch_size=4)
        data.setup()
        return data

    def fit(model: Pnpt, data: MultiClassMVTecAD) -> None:
        engine = Engine(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=False)
        engine.fit(model, datamodule=data)

    model = Pnpt(backbone="tf_efficientnet_lite0", pre_trained=False, image_size=64, hidden_dim=32)
    two, three = datamodule(["disc", "weave"]), datamodule(["disc", "tiles", "weave"])
    model.fill_prompt_pool(two)
    assert model.prompt_pool.num_classes == 2 and model.prompt_categories == ["disc", "weave"]
    keys = model.prompt_pool.keys.clone()
    fit(model, two)  # ready: kept as built
    assert torch.equal(model.prompt_pool.keys, keys)
    model.rebuild_prompt_pool = True  # --model.training.rebuild_prompt_pool true on the CLI
    fit(model, three)
    assert model.prompt_pool.num_classes == 3 and model.prompt_categories == ["disc", "tiles", "weave"]


def test_several_entries_per_class_retrieve_their_class_and_remove_together() -> None:
    """OneNIP's layout: entries grouped by class whatever their order; one retrieval gives class and similarity."""
    # (the similarity: to the retrieved class's nearest training image, here its entries)
    pool = PromptPool(entries_per_class=2)
    keys = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.9, 0.1], [0.9, 0.1, 0.0]])
    pool.set_entries(torch.tensor([1, 0, 1, 0]), keys, [torch.arange(4.0).view(4, 1)])
    assert pool.num_classes == 2 and pool.num_entries == 4
    retrieval = pool.retrieve(torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 1.0]]))
    assert retrieval.class_ids.tolist() == [0, 1]
    assert retrieval.prompts[0].flatten().tolist() == [3.0, 2.0]  # entry 3 (class 0), entry 2 (class 1)
    nearest = [keys[3] / keys[3].norm(), keys[2] / keys[2].norm()]  # class 0's nearest entry; class 1's
    queries = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 1.0]])
    expected = torch.stack([q / q.norm() @ k for q, k in zip(queries, nearest, strict=True)])
    torch.testing.assert_close(retrieval.class_similarity, expected)
    assert retrieval.unknown.tolist() == [False, True]  # the second is far from both of class 1's images
    pool.remove_class(0)
    assert pool.num_classes == 1 and pool.prompts[0].flatten().tolist() == [0.0, 2.0]
    with pytest.raises(ValueError, match="2 entries"):
        pool.set_entries(torch.tensor([0, 0, 1]), keys[:3], [torch.zeros(3, 1)])
