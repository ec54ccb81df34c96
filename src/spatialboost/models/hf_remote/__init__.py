"""The remote code shipped in every exported encoder folder, so that users load it with transformers:

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    out = model(**processor(images, return_tensors="pt"))    # out.patch_tokens, out.cls_token

These files are copied as they are into the folder (`export.py`) and must import nothing from
spatialboost: a user's environment has torch and transformers (open_clip for OpenCLIP towers),
not our package. They re-implement three small things of the library, each checked against it by
tests/test_ecosystems.py: dual-channel attention (models/dual_channel.py), the feature-layer
selection (models/encoders.py) and the preprocessing (models/preprocess.py).
"""

from pathlib import Path

REMOTE_CODE_DIR = Path(__file__).resolve().parent
REMOTE_CODE_FILES = ("configuration_spatialboost.py", "modeling_spatialboost.py", "image_processing_spatialboost.py")
