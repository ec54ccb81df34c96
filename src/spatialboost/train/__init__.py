"""The one SFT loop for every stage (align, instruct, boost) and adapter (dual_channel, full,
lora), distributed training, checkpoints, and the demo's bootstrap pre-training.

    from spatialboost.train import ConversationDataset, load_conversations, train
    dataset = ConversationDataset(load_conversations(cfg.train.data), tokenizer, vlm.encoder.preprocess,
                                  image_root=cfg.train.image_root, max_length=cfg.train.max_length)
    result = train(vlm, dataset, cfg.train, cfg.train.output, tracker=tracker)

Modules: loop (train, fit), data (conversations -> batches), adapters (what trains),
objective (the summed SFT loss), optim (AdamW, warmup + cosine), checkpoint (atomic, exact
resume), distributed (DDP/FSDP, deterministic global batches), stage (load -> train -> save;
`python -m spatialboost.train`, torchrun-ready), bootstrap + bootstrap_data + bootstrap_encoder
(the demo's pre-training; import them explicitly).
"""

from spatialboost.train.adapters import TrainableReport, merge_lora, prepare_stage
from spatialboost.train.data import (
    ConversationDataset,
    ImageFetcher,
    SFTBatch,
    SFTCollator,
    SFTExample,
    load_conversations,
    manifest_sha256,
)
from spatialboost.train.distributed import DistContext, init_distributed
from spatialboost.train.loop import TrainResult, fit, train
from spatialboost.train.stage import load_initial_model, run_train_stage, save_trained

__all__ = [
    "ConversationDataset",
    "DistContext",
    "ImageFetcher",
    "SFTBatch",
    "SFTCollator",
    "SFTExample",
    "TrainResult",
    "TrainableReport",
    "fit",
    "init_distributed",
    "load_conversations",
    "load_initial_model",
    "manifest_sha256",
    "merge_lora",
    "prepare_stage",
    "run_train_stage",
    "save_trained",
    "train",
]
