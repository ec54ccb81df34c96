"""Vision encoders, dual-channel attention, the spatial VLM, its tokenizer and encoder export.

Import from the submodules: `spatialboost.models.encoders`, `.dual_channel`, `.vlm`,
`.tokenizer`, `.export`, `.preprocess` (nothing is imported here, so importing the package is
cheap and pulls neither transformers nor open_clip).
"""
