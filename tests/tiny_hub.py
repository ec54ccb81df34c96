"""A local hub mirror of the paper profile: tiny random models of the real classes, saved under
the real repositories' ids and file names, with the download records `hf download --local-dir`
writes, plus files of those repositories the pipeline must NOT fetch (.bin / .pt duplicates,
the transformers copy of the open_clip weights).

    mirror = save_paper_mirror(tmp_path / "mirror", commit="ab" * 20)
    cfg = load_config(params, [f"hub.mirror={mirror}"])    # the hub stage reads it, offline
    save_paper_mirror(root, commit, camera=GroundCamera())  # Depth Pro and SAM 2 that see the test world

The labeler folder holds open_clip_config.json with the tiny architecture, which the paper
profile's `local-dir:models/hub/labeler` reads. With `camera`, Depth Pro and SAM 2 are the
hand-set ones of `tests.tiny_scene_models` (ground-plane depth, hue-keyed masks) instead of
random ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.tiny_models import save_depth_pro, save_openclip, save_sam2_hf
from tests.tiny_scene_models import GroundCamera, save_colour_sam2, save_ground_plane_depth_pro
from tests.tiny_vlm import save_tiny_llava, train_tiny_tokenizer

PAPER_REPOS = {
    "depth": "apple/DepthPro-hf",
    "segmenter": "facebook/sam2.1-hiera-large",
    "labeler": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "lvlm": "llava-hf/llava-1.5-7b-hf",
}
NOT_FETCHED = {
    "apple/DepthPro-hf": ["README.md"],
    "facebook/sam2.1-hiera-large": ["sam2.1_hiera_large.pt", "README.md"],
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K": ["open_clip_pytorch_model.bin", "model.safetensors", "config.json"],
    "llava-hf/llava-1.5-7b-hf": ["pytorch_model.bin", "README.md"],
}
"""Per repository: files the mirror holds that the paper profile's allow_patterns leave out."""


def save_paper_mirror(root: Path, commit: str, seed: int = 0, camera: GroundCamera | None = None) -> Path:
    """`root`/<repo_id>/<files> for every role of configs/paper.yaml, recorded as of `commit`."""
    from huggingface_hub._local_folder import write_download_metadata

    root = Path(root)
    if camera is None:
        save_depth_pro(root / PAPER_REPOS["depth"], seed)
        save_sam2_hf(root / PAPER_REPOS["segmenter"], seed)
    else:
        save_ground_plane_depth_pro(root / PAPER_REPOS["depth"], camera)
        save_colour_sam2(root / PAPER_REPOS["segmenter"])
    labeler = root / PAPER_REPOS["labeler"]
    _, weights = save_openclip(labeler, seed)
    weights.rename(labeler / "open_clip_pytorch_model.safetensors")  # the laion repository's file name
    tokenizer = train_tiny_tokenizer(root / ".tokenizer")
    save_tiny_llava(root / PAPER_REPOS["lvlm"], tokenizer, seed)
    shutil.rmtree(root / ".tokenizer")
    for repo, names in NOT_FETCHED.items():
        for name in names:
            (root / repo / name).write_bytes(b"not for the pipeline")
    for repo in PAPER_REPOS.values():
        folder = root / repo
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
            write_download_metadata(folder, path.relative_to(folder).as_posix(), commit, etag="tiny")
    return root
