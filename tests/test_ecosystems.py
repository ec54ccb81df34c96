"""A boosted encoder where its users already work: pulled from the registry with `spatialboost pull`,
then loaded in a fresh process through transformers' AutoModel (without spatialboost importable),
through open_clip (`spatialboost.open_clip`), and through our own loader; features equal the
pipeline's to 1e-5 for every family the registry holds. The model card comes with every version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialboost.config import HubConfig, ModelPin, TrackingConfig, TrainConfig
from spatialboost.models.card import CardInputs, base_model_of, model_card
from spatialboost.models.dual_channel import add_dual_channel, dual_channel_layers
from spatialboost.models.encoders import OpenCLIPEncoder, VisionEncoder
from spatialboost.models.export import export_encoder, read_spec
from spatialboost.models.hf_remote import REMOTE_CODE_FILES
from spatialboost.tracking import Tracker, pull_encoder
from tests.tiny_models import save_openclip
from tests.tiny_vlm import FAMILIES, random_images, tiny_encoder

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5
EVALUATE = {
    "baseline": {"depth_rmse": {"mean": 4.97, "std": 0.018}, "cls_top1": {"mean": 0.198, "std": 0.048},
                 "vqa_relative_depth_acc": {"mean": 0.5, "std": 0.06}},
    "boosted": {"depth_rmse": {"mean": 4.51, "std": 0.02}, "cls_top1": {"mean": 0.208, "std": 0.009},
                "vqa_relative_depth_acc": {"mean": 0.61, "std": 0.05}},
}  # fmt: skip
QA_HASH = "0123456789abcdef0123456789abcdef.dir"
GIT_COMMIT = "feedfacecafebeef0000000000000000deadbeef"

# Runs in a new interpreter where `import spatialboost` fails: only torch, transformers (and
# open_clip for the OpenCLIP tower) and the folder's own remote code.
_AUTOMODEL = """
import json, os, sys
sys.modules["spatialboost"] = None  # any import of spatialboost now raises ImportError
sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "spatialboost"))]
import numpy as np, torch
from transformers import AutoImageProcessor, AutoModel
images = list(np.load(sys.argv[1]))
out = {}
for family, folder in json.loads(sys.argv[2]).items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        feats = model(**processor(images, return_tensors="pt"))
    out[family + ".patch"] = feats.patch_tokens.numpy()
    out[family + ".pooled"] = feats.pooler_output.numpy()
    if feats.cls_token is not None:
        out[family + ".cls"] = feats.cls_token.numpy()
np.savez(sys.argv[3], **out)
assert not [m for m in sys.modules if m.startswith("spatialboost") and sys.modules[m] is not None]
"""

_LOAD_ENCODER = """
import json, sys
import numpy as np
from spatialboost.models.export import load_exported_encoder
images = np.load(sys.argv[1])
out = {}
for family, folder in json.loads(sys.argv[2]).items():
    feats = load_exported_encoder(folder)(images)
    out[family + ".patch"] = feats.patch_tokens.numpy()
    if feats.cls_token is not None:
        out[family + ".cls"] = feats.cls_token.numpy()
np.savez(sys.argv[3], **out)
"""

# Plain open_clip code, as a user has it, with one changed line: where the model comes from.
_OPEN_CLIP = """
import sys
import numpy as np, torch
from PIL import Image
from spatialboost import open_clip as sb_open_clip
model, _, preprocess = sb_open_clip.create_model_and_transforms(sys.argv[2], pretrained=sys.argv[3])
tokenizer = sb_open_clip.get_tokenizer(sys.argv[2])
pixels = torch.stack([preprocess(Image.fromarray(image)) for image in np.load(sys.argv[1])])
with torch.no_grad():
    image_features = model.encode_image(pixels)
    text_features = model.encode_text(tokenizer(["a photo of a cube", "a red sphere"]))
    model.visual.output_tokens = True
    _, tokens = model.visual(pixels)
np.savez(sys.argv[4], image=image_features.numpy(), text=text_features.numpy(), tokens=tokens.numpy(),
         pixels=pixels.numpy())
"""


@dataclass
class Registered:
    """What the pipeline side knows: the registry, each family's expected features, the images."""

    tracker: Tracker
    images: Path  # images.npy: (B, H, W, 3) uint8
    expected: dict[str, np.ndarray]  # "<family>.patch" / ".cls" / ".pooled" / "open_clip.image" / ".text"
    base_clip: Path  # the base CLIP checkpoint the OpenCLIP tower was taken from
    names: dict[str, str]  # family -> registered model name
    exports: dict[str, Path]  # family -> the export folder the pipeline wrote (a DVC output)


def _boosted(encoder: VisionEncoder, seed: int) -> VisionEncoder:
    """Dual-channel attention with Attn+ and the gates moved off their initial values, as after a boost."""
    add_dual_channel(encoder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in dual_channel_layers(encoder):
            layer.gate.copy_(torch.randn(layer.gate.shape, generator=generator))
            for p in layer.attn_plus.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return encoder.eval()


def _card(name: str, spec: dict, run_id: str) -> str:
    hub = HubConfig(models={"lvlm": ModelPin(repo_id="llava-hf/llava-1.5-7b-hf")})
    return model_card(CardInputs(
        model_name=name, spec=spec, base_model=base_model_of("models/hub/lvlm", hub), data_version=QA_HASH,
        recipe=TrainConfig().model_dump(mode="json"), metrics=EVALUATE, git_commit=GIT_COMMIT, profile="demo",
        run_id=run_id,
    ))  # fmt: skip


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """One registry version (alias champion) per family, each a boosted tiny encoder of the real class."""
    root = tmp_path_factory.mktemp("ecosystems")
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_location=str(root / "art"),
                                     champion_metric="score", champion_mode="max"), profile="demo")
    images = np.stack(random_images(3, seed=7))
    np.save(root / "images.npy", images)
    base_dir, base_clip = save_openclip(root / "base-clip")
    expected: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    exports: dict[str, Path] = {}
    for i, family in enumerate(FAMILIES):
        if family == "open_clip":  # the tower of a full CLIP checkpoint, like the paper profile's
            encoder = OpenCLIPEncoder.from_pretrained(f"local-dir:{base_dir}", feature_layer=-1, apply_final_norm=True)
        else:
            encoder = tiny_encoder(family, seed=i, feature_layer=-2)
        encoder = _boosted(encoder, seed=i)
        with torch.no_grad():
            feats = encoder.encode(images)
            expected[f"{family}.patch"] = feats.patch_tokens.numpy()
            pooled = feats.cls_token if feats.cls_token is not None else feats.patch_tokens.mean(dim=1)
            expected[f"{family}.pooled"] = pooled.numpy()
            if feats.cls_token is not None:
                expected[f"{family}.cls"] = feats.cls_token.numpy()
            if family == "open_clip":  # what open_clip's encode_image computes with the pipeline's tower
                expected["open_clip.image"] = encoder.model(encoder.preprocess(images)).numpy()
        export = exports[family] = export_encoder(encoder, root / "exports" / family)
        names[family] = tracker.model_name(f"{family}-tiny")
        with tracker.run("pipeline") as run_id:
            tracker.log_metrics({"score": 1.0})
            version = tracker.register_encoder(export, f"{family}-tiny", model_card=_card(names[family], read_spec(export), run_id))
            assert tracker.promote_if_better(names[family], version)
    import open_clip

    base, _, _ = open_clip.create_model_and_transforms(f"local-dir:{base_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{base_dir}")
    with torch.no_grad():
        expected["open_clip.text"] = base.eval().encode_text(tokenizer(["a photo of a cube", "a red sphere"])).numpy()
    return Registered(tracker, root / "images.npy", expected, base_clip, names, exports)


def _env(tmp: Path) -> dict[str, str]:
    # transformers copies remote code into HF_HOME/modules: keep it in the test's folder
    return {**os.environ, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _pull_command(registered: Registered, family: str, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spatialboost.cli", "pull", f"{registered.names[family]}@champion",
            "--output", str(output), "-S", f"tracking.tracking_uri={registered.tracker.uri}", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def pulled(registered: Registered, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family's champion pulled to its own folder: DINOv2 (the demo's encoder) with the command a
    user types, `spatialboost pull NAME@champion --output DIR`, in a new process; the others with the
    library function that command calls (a CLI process per family would only add start-up time)."""
    root = tmp_path_factory.mktemp("pulled")
    folders = {family: root / f"{registered.names[family]}-champion" for family in FAMILIES}
    result = subprocess.run(_pull_command(registered, "dinov2", folders["dinov2"]), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["folder"] == str(folders["dinov2"])
    for family in FAMILIES:
        if family != "dinov2":
            uri = f"models:/{registered.names[family]}@champion"
            assert pull_encoder(uri, folders[family], tracking_uri=registered.tracker.uri) == folders[family]
    return folders


def test_pull_writes_the_whole_folder(pulled: dict[str, Path], registered: Registered, tmp_path: Path) -> None:
    for family, folder in pulled.items():
        names = {p.name for p in folder.iterdir()}
        expected = {"model.safetensors", "encoder.json", "config.json", "preprocessor_config.json", "README.md",
                    *REMOTE_CODE_FILES} | ({"open_clip_config.json"} if family == "open_clip" else set())  # fmt: skip
        assert names == expected, (family, names ^ expected)
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"]["AutoModel"] == "modeling_spatialboost.SpatialBoostVisionModel"
        assert config["family"] == family and config["dual_channel"] is True
    # pulling onto an existing folder needs --force; the error is one line
    again = subprocess.run(_pull_command(registered, "dinov2", pulled["dinov2"]), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert again.returncode == 2 and again.stderr.strip() == f"error: {pulled['dinov2']} exists; pass --force to replace it"
    target = tmp_path / "pulled"
    pull_encoder(f"models:/{registered.names['siglip']}@champion", target, tracking_uri=registered.tracker.uri)
    with pytest.raises(FileExistsError):
        pull_encoder(f"models:/{registered.names['dinov2']}@champion", target, tracking_uri=registered.tracker.uri)
    pull_encoder(f"models:/{registered.names['dinov2']}@champion", target, tracking_uri=registered.tracker.uri, force=True)
    assert json.loads((target / "config.json").read_text())["family"] == "dinov2"  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pulled"]  # no temporary folder left behind


def test_automodel_in_a_fresh_process_without_spatialboost(pulled: dict[str, Path], registered: Registered,
                                                            tmp_path: Path) -> None:
    folders = json.dumps({family: str(folder) for family, folder in pulled.items()})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_AUTOMODEL), str(registered.images), folders,
                             str(tmp_path / "hf.npz")], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    got = np.load(tmp_path / "hf.npz")
    for family in FAMILIES:
        for kind in ("patch", "pooled", "cls"):
            key = f"{family}.{kind}"
            if key in registered.expected:
                np.testing.assert_allclose(got[key], registered.expected[key], rtol=0, atol=ATOL, err_msg=key)
    assert "siglip.cls" not in got  # SigLIP has no CLS token: pooled = mean patch token, as in embed_images


def test_load_encoder_in_a_fresh_process(pulled: dict[str, Path], registered: Registered, tmp_path: Path) -> None:
    folders = json.dumps({family: str(folder) for family, folder in pulled.items()})
    subprocess.run([sys.executable, "-c", textwrap.dedent(_LOAD_ENCODER), str(registered.images), folders,
                    str(tmp_path / "ours.npz")], check=True, cwd=ROOT, timeout=300)  # fmt: skip
    got = np.load(tmp_path / "ours.npz")
    for key in got.files:
        np.testing.assert_allclose(got[key], registered.expected[key], rtol=0, atol=ATOL, err_msg=key)
    assert len(got.files) == 2 * len(FAMILIES) - 1  # every family's patch tokens, CLS tokens but SigLIP's


def test_open_clip_model_in_a_fresh_process(pulled: dict[str, Path], registered: Registered, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_OPEN_CLIP), str(registered.images),
                             str(pulled["open_clip"]), str(registered.base_clip), str(tmp_path / "oc.npz")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "initialized randomly" not in result.stderr  # the base checkpoint filled the text tower
    got = np.load(tmp_path / "oc.npz")
    # open_clip's own transforms on PIL images give the pipeline's pixels, its encode_image the boosted
    # tower's output, its tokens (final norm) our patch tokens, and the text tower is the base CLIP's
    np.testing.assert_allclose(got["image"], registered.expected["open_clip.image"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["tokens"], registered.expected["open_clip.patch"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["text"], registered.expected["open_clip.text"], rtol=0, atol=ATOL)


def test_open_clip_refuses_other_families_and_missing_checkpoints(pulled: dict[str, Path]) -> None:
    from spatialboost import open_clip as sb_open_clip

    with pytest.raises(ValueError, match="a dinov2 encoder, not an OpenCLIP tower.*AutoModel"):
        sb_open_clip.create_model(pulled["dinov2"])
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        sb_open_clip.create_model(pulled["open_clip"], pretrained="laion2b_s32b_b82k")
    with pytest.warns(UserWarning, match="text tower .* random"):
        model = sb_open_clip.create_model(pulled["open_clip"])
    assert type(model).__name__ == "CLIP" and any("attn_plus" in name for name, _ in model.visual.named_parameters())


def test_model_card_on_every_version(pulled: dict[str, Path], registered: Registered) -> None:
    for family, folder in pulled.items():
        card = (folder / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: transformers\n") and "base_model: llava-hf/llava-1.5-7b-hf\n" in card
        assert f"# {registered.names[family]}\n" in card and f"Family: `{family}`" in card
        assert f"`{QA_HASH}`" in card and f"`{GIT_COMMIT}`" in card
        assert "- adapter: `dual_channel`" in card and "- lr: `0.0002`" in card  # the recipe: train params
        assert "| depth linear probe RMSE (m) (`depth_rmse`, lower is better) | 4.97 ± 0.018 | 4.51 ± 0.02 | -0.46 |" in card
        assert "| BLINK-style relative depth accuracy (VLM) (`vqa_relative_depth_acc`, higher is better) | 0.5 ± 0.06 | 0.61 ± 0.05 | +0.11 |" in card  # noqa: E501
        assert ("create_model_and_transforms" in card) is (family == "open_clip")
        version = registered.tracker.client.get_model_version_by_alias(registered.names[family], "champion")
        assert version.description.startswith(f"A {family} vision encoder made spatially aware by SpatialBoost")
        assert "4.51 ± 0.02" in version.description and "---" not in version.description.splitlines()[0]
    # the card goes into the logged copy: the export itself (a DVC output) is left as it was
    assert not any((folder / "README.md").exists() for folder in registered.exports.values())


def test_model_card_without_metrics_and_with_a_local_base(tmp_path: Path) -> None:
    spec = read_spec(export_encoder(tiny_encoder("dinov2"), tmp_path / "e"))
    card = model_card(CardInputs(model_name="spatialboost-x", spec=spec, base_model="models/bootstrap/vlm",
                                 data_version="unknown", recipe={}, metrics={}, git_commit="unknown", profile="demo"))
    assert "base_model:" not in card and "Base encoder: `models/bootstrap/vlm`" in card
    assert "No evaluation metrics were recorded" in card and "Dual-channel attention: no" in card
    assert base_model_of("models/bootstrap/vlm", HubConfig()) == "models/bootstrap/vlm"
    pinned = HubConfig(models={"lvlm": ModelPin(repo_id="llava-hf/llava-1.5-7b-hf", revision="a" * 40)})
    assert base_model_of("models/hub/lvlm", pinned) == f"llava-hf/llava-1.5-7b-hf@{'a' * 40}"


_EXPORT = """
import sys, torch
from tests.tiny_vlm import tiny_encoder
from spatialboost.models.dual_channel import add_dual_channel
from spatialboost.models.export import export_encoder
encoder = tiny_encoder("clip", seed=3)
add_dual_channel(encoder)
export_encoder(encoder, sys.argv[1])
"""


def test_export_is_byte_reproducible_across_processes(tmp_path: Path) -> None:
    """Same encoder, two processes, identical files (one safetensors metadata key: see export.py)."""
    subprocess.run([sys.executable, "-c", _EXPORT, str(tmp_path / "b")], check=True, cwd=ROOT, timeout=300)
    encoder = tiny_encoder("clip", seed=3)
    add_dual_channel(encoder)
    export_encoder(encoder, tmp_path / "a")

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_registry_description_fits_mlflow_and_drops_front_matter() -> None:
    from spatialboost.tracking import MAX_DESCRIPTION_CHARS, _description

    card = "---\nlibrary_name: transformers\n---\n# spatialboost-x\n\nA line.\n" + "| row | 1 |\n" * 1000
    text = _description(card)
    assert text.startswith("A line.\n") and len(text) <= MAX_DESCRIPTION_CHARS
    assert text.endswith("(the full model card is README.md in this version's files)")
    assert _description("# t\n\nshort\n") == "short\n"
