"""Tiny models of the real extraction classes whose weights are set by hand, so that the `models`
backend sees the test world: Depth Pro gives the ground plane's metric depth and SAM 2 gives
one mask per coloured object. Nothing is trained and nothing is patched at run time: each
`save_*` writes a checkpoint folder that `from_pretrained` loads through the pipeline's own code.

    camera = GroundCamera(height_m=1.6, pitch_deg=-35.0, fov_deg=60.0)
    save_ground_plane_depth_pro(tmp_path / "depth", camera)   # DepthProForDepthEstimation + processor
    save_colour_sam2(tmp_path / "segmenter")                  # Sam2Model + Sam2Processor
    jpegs = scene_jpegs(camera, tmp_path / "renders", n=8)    # world renders they see, EXIF JPEGs

How (the why of every weight is at its assignment):
- Depth Pro: a depth model needs to know where it looks from; this one knows one camera (height,
  pitch, no roll, field of view). Its image encoder ignores the pixels and carries the
  normalised row coordinate y of every patch in its position embeddings (transformer blocks off:
  layer scale 0); upsampling layers extrapolate y linearly at each resolution, and the head
  turns it into the ground plane's canonical inverse depth, linear in y for a level-rolled
  camera: Depth Pro's metric depth f / (W * c) is then the ground's z-depth for the EXIF focal.
  Objects get the depth of the ground behind their pixels: they come out as flat patches on the
  ground (a model this size cannot find an object's foot), which the geometry measures as
  shallow boxes.
- SAM 2: hue keys the masks. The Hiera patch embedding measures the chroma (RGB minus its grey)
  of each 4 x 4 cell; the first block's LayerNorm normalises it with a gate (through its epsilon,
  weak chroma such as the brownish-grey ground stays short) and its MLP writes the gated hue h
  (the per-pixel features, at 1/4) and a hue code: one vote per direction of twelve where the
  pixel is strongly that hue. Max pooling carries the votes to the 1/16 image embedding, where
  they decode to each cell's hue v (0 on the ground). The prompt encoder's positional encoding
  uses six frequencies (the other ten are zero, which frees channels for content), so the mask
  decoder's token-to-image attention, sharpened, reads v under the point; the hypernetworks turn
  it into a key, and a pixel joins the mask when its gate times cos(hue difference) exceeds a
  threshold, stricter for ground-like hues. The IoU head rises with |v| (0.73 on grey: below
  SAM's 0.8 filter). Hues closer than MIN_HUE_GAP_DEG can merge (two blue spheres are one mask)
  and black or white objects are not found: `distinct_hue_scene` picks the scenes whose objects
  the segmenter can tell apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from spatialboost.config import WorldConfig

SAM2_INPUT_PX = 256  # image embedding 16 x 16: one hue sample per 8 px of a 128 px render
DEPTH_PRO_INPUT_PX = 128


@dataclass(frozen=True)
class GroundCamera:
    """The one camera the tiny Depth Pro knows: height above the ground, pitch (negative looks
    down), horizontal field of view; no roll, square images."""

    height_m: float = 1.6
    pitch_deg: float = -35.0
    fov_deg: float = 60.0

    def inverse_depth_line(self) -> tuple[float, float]:
        """(A, B) with Depth Pro's canonical inverse depth c = A * y + B on the ground, where y is
        the row's normalised image coordinate in (-0.5, 0.5) (top to bottom).

        A ground pixel's z-depth is h / ((v - cy) cos(t) / f + sin(t)) for pitch -t; Depth Pro's
        metric depth is f / (W * c), so c = ((v - cy) cos(t) + f sin(t)) / (W * h), and with
        v - cy = W * y and f / W = 0.5 / tan(fov / 2) that is linear in y."""
        tilt = math.radians(-self.pitch_deg)
        f_over_w = 0.5 / math.tan(math.radians(self.fov_deg) / 2)
        return math.cos(tilt) / self.height_m, f_over_w * math.sin(tilt) / self.height_m


# ---------------------------------------------------------------------------------------------
# Depth Pro


def save_ground_plane_depth_pro(folder: Path, camera: GroundCamera) -> Path:
    """A tiny DepthProForDepthEstimation (+ processor) whose depth is `camera`'s ground plane."""
    from transformers import DepthProConfig, DepthProForDepthEstimation, DepthProImageProcessor

    dinov2 = dict(model_type="dinov2", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, patch_size=8, image_size=32)  # fmt: skip
    config = DepthProConfig(
        patch_size=32, fusion_hidden_size=16, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[16, 16],
        scaled_images_feature_dims=[16, 16, 16], use_fov_model=True, image_model_config=dict(dinov2),
        patch_model_config=dict(dinov2), fov_model_config=dict(dinov2),
    )  # fmt: skip
    torch.manual_seed(0)
    model = DepthProForDepthEstimation(config).eval()
    with torch.no_grad():
        _zero_all(model)
        _ground_plane_weights(model, camera)
    model.save_pretrained(folder)
    DepthProImageProcessor(size={"height": DEPTH_PRO_INPUT_PX, "width": DEPTH_PRO_INPUT_PX}).save_pretrained(folder)
    return Path(folder)


ROW, ONE = 0, 1  # the two channels every Depth Pro feature map carries: y and a constant 1
_LN_CONSTANT = 50.0  # +/- this in two channels keeps a LayerNorm's scale constant (see _ground_plane_weights)


def _zero_all(model: torch.nn.Module) -> None:
    """Every weight and bias 0, LayerNorm scales 1: the starting point of a hand-set model."""
    for param in model.parameters():
        param.zero_()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)


def _ground_plane_weights(model: torch.nn.Module, camera: GroundCamera) -> None:
    slope, offset = camera.inverse_depth_line()
    encoder = model.depth_pro.encoder.image_encoder.model  # Dinov2Model on the 32 px image: 4 x 4 patches
    grid = 4
    # Position embeddings (cls first, then row-major patches): y at the patch centre in channel
    # ROW, -y in channel 2 and +/-K in 3 and 4, so the final LayerNorm (mean 0, variance ~K^2 / 8)
    # only rescales: (y - mean) / std is y * sqrt(8) / K to 1e-4.
    pos = encoder.embeddings.position_embeddings  # (1, 1 + 16, 16)
    k = _LN_CONSTANT
    for i in range(grid):
        y = (i + 0.5) / grid - 0.5
        for j in range(grid):
            pos[0, 1 + i * grid + j, [ROW, 2, 3, 4]] = torch.tensor([y, -y, k, -k])
    for layer in encoder.encoder.layer:  # transformer blocks off: each adds layer_scale * branch
        layer.layer_scale1.lambda1.zero_()
        layer.layer_scale2.lambda1.zero_()
    ln_scale = math.sqrt(8) / k  # what the final LayerNorm multiplies every channel by
    # image_block: ConvTranspose 4 x 4 -> 8 x 8; y at the finer rows from y and the constant
    # (channel 3 after the LayerNorm is sqrt(8)); ONE = 1 from the bias.
    up = model.depth_pro.neck.feature_upsample.image_block.layers[0]
    _upsample_rows(up.weight, in_row=ROW, in_one=3, row_scale=1 / ln_scale, one_value=math.sqrt(8), coarse_rows=grid)
    # fuse_image_with_low_res (1x1 on [low-res patch features, image features]): pass the image's two.
    fuse = model.depth_pro.neck.fuse_image_with_low_res
    n_patch = fuse.in_channels // 2
    fuse.weight[ROW, n_patch + ROW] = fuse.weight[ONE, n_patch + ONE] = 1.0
    projection = model.depth_pro.neck.feature_projection.projections[0]  # 3x3, centre tap only
    projection.weight[ROW, ROW, 1, 1] = projection.weight[ONE, ONE, 1, 1] = 1.0
    # Fusion: the residual units add conv branches that are all 0 (identity); each deconv
    # doubles the resolution, extrapolating y; projections pass the two channels.
    rows = 2 * grid
    for layer in [*model.fusion_stage.intermediate, model.fusion_stage.final]:
        if layer.use_deconv:
            _upsample_rows(layer.deconv.weight, ROW, ONE, 1.0, 1.0, rows)
            rows *= 2
        layer.projection.weight[ROW, ROW] = layer.projection.weight[ONE, ONE] = 1.0
    head = model.head.layers  # conv3x3 -> deconv -> conv3x3 -> ReLU -> conv1x1 -> ReLU
    head[0].weight[ROW, ROW, 1, 1] = head[0].weight[ONE, ONE, 1, 1] = 1.0
    _upsample_rows(head[1].weight, ROW, ONE, 1.0, 1.0, rows)
    head[1].bias.zero_()
    # c = max(A y + B, c_min) = ReLU(A y + B - c_min) + c_min: the ground, and never 0 (an
    # infinite depth) above a horizon.
    c_min = offset / 50.0  # 50x the depth at the image centre
    head[2].weight[0, ROW, 1, 1], head[2].weight[0, ONE, 1, 1] = slope, offset - c_min
    head[4].weight[0, 0] = 1.0
    head[4].bias.fill_(c_min)
    # The FOV head says the camera's field of view (the EXIF focal wins anyway).
    model.fov_model.head.layers[-1].bias.fill_(camera.fov_deg)


def _upsample_rows(
    weight: torch.Tensor, in_row: int, in_one: int, row_scale: float, one_value: float, coarse_rows: int
) -> None:
    """Set a ConvTranspose2d(k=2, s=2) weight (in, out, 2, 2) so that output channel ROW holds the
    normalised row coordinate of the finer grid and ONE holds 1.

    A coarse row i (of n) has y = (i + 0.5) / n - 0.5; its two fine rows a = 0, 1 have
    y' = y + (a - 0.5) / (2 n). Input channel `in_row` holds y / row_scale, `in_one` holds
    `one_value`."""
    for a in range(2):
        weight[in_row, ROW, a, :] = row_scale
        weight[in_one, ROW, a, :] += (a - 0.5) / (2 * coarse_rows) / one_value
        weight[in_one, ONE, a, :] = 1.0 / one_value


# ---------------------------------------------------------------------------------------------
# SAM 2

GROUND_HUE_DEG = 66.0  # the world's ground tiles (t, 0.92 t, 0.8 t): a brownish grey
CHROMA_KNEE = 0.08  # chroma |RGB - grey| (0-1 units) where the gate is 1/sqrt(2)
# Hue thresholds t(hue) = GATE_FAR + GATE_GROUNDWARD * relu(cos(hue - ground hue)) on gate * cos(hue
# difference): strict for ground-like hues (the ground's chroma <= 0.09, gate <= 0.75; red, orange,
# yellow >= 0.14, gate >= 0.87), loose for the others (purple >= 0.074, gate >= 0.68). A pixel joins a
# prompt's mask above t(prompt hue); a code direction votes above t(its hue). Hues less than
# MIN_HUE_GAP_DEG apart can still merge.
GATE_FAR, GATE_GROUNDWARD = 0.55, 0.25
N_CODE = 12  # hue directions of the code (every 30 degrees)
LOGIT_SCALE = 400.0  # sharp masks: stability ~1 away from edges
STAGE_DIMS = [24, 32, 48, 96]

# Hiera stage-0 channels
EC, H, K_POS, K_NEG, CODE, NEG_SUM = [0, 1, 2], [3, 4, 5], 6, 7, list(range(8, 8 + N_CODE)), 8 + N_CODE
H_OFFSET = 9.0  # GELU(z + 9) = z + 9 to 1e-3 for |z| <= sqrt(24) (|h| <= sqrt(24))

# Token space of the mask decoder (32 dims). The prompt encoder's Fourier features are
# [sin(2 pi B^T p), cos(2 pi B^T p)] over 16 frequencies; six are non-zero, so of the sin half
# dims 6..15 are always 0 (free for content) and of the cos half dims 22..31 always 1.
POS_DIMS = [*range(6), *range(16, 22)]  # PE of the point / of each image cell
NEG_POS_DIMS = [*range(6, 16), 22, 23]  # -PE: the copy that keeps LayerNorm means at 0
HUE_DIMS, NEG_HUE_DIMS = [24, 25, 26], [27, 28, 29]  # 0.1 v(q), the hue under the prompt, and -0.1 v(q)
MARKER = 6  # set in the point token only (free in PE): what every token's self-attention finds
IMAGE_HUE_DIMS = [6, 7, 8]  # the image embedding's hue v (free in PE, so keys see position only)
N_NORM = 6  # |v| ~ sum over 6 directions of |d . v| / NORM_SUM (ripple ~1%)
NORM_SUM = N_NORM * 2 / math.pi
NORM_UNITS = list(range(6, 6 + 2 * N_NORM))
GROUND_UNIT = 6 + 2 * N_NORM


def chroma_direction(deg: float) -> torch.Tensor:
    """The unit RGB vector (zero-sum) of hue `deg` in the chroma plane, e1 = (1, -1, 0) / sqrt(2)
    at 0 degrees and e2 = (1, 1, -2) / sqrt(6) at 90 (red ~30, yellow ~80, green ~150, blue ~-100)."""
    e1 = torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2)
    e2 = torch.tensor([1.0, 1.0, -2.0]) / math.sqrt(6)
    return math.cos(math.radians(deg)) * e1 + math.sin(math.radians(deg)) * e2


def hue_threshold(deg: float) -> float:
    """t(hue): the gate * cos a pixel needs to count as hue `deg` (higher where the ground could pass)."""
    return GATE_FAR + GATE_GROUNDWARD * max(0.0, math.cos(math.radians(deg - GROUND_HUE_DEG)))


def save_colour_sam2(folder: Path) -> Path:
    """A tiny Sam2Model (+ Sam2Processor at 256 px) whose point prompts return hue-keyed masks."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    s = SAM2_INPUT_PX
    backbone = Sam2HieraDetConfig(
        hidden_size=STAGE_DIMS[0], num_attention_heads=1, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=STAGE_DIMS, num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[8, 4, 4, 4],
        global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4],
    )  # fmt: skip
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=STAGE_DIMS[::-1],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]], fpn_hidden_size=32,
    )  # fmt: skip
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=s, patch_size=16, mask_input_channels=4),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=1, iou_head_hidden_dim=32),
    )  # fmt: skip
    processor = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    torch.manual_seed(0)
    model = Sam2Model(config).eval()
    with torch.no_grad():
        _zero_all(model)
        _hue_backbone(model, processor.image_mean, processor.image_std)
        _hue_decoder(model)
    model.save_pretrained(folder)
    Sam2Processor(image_processor=processor).save_pretrained(folder)
    return Path(folder)


def _hue_backbone(model: torch.nn.Module, image_mean: list[float], image_std: list[float]) -> None:
    """Hiera + FPN: the gated hue h(p) at 1/4 (feat_s0, the per-pixel features) and, at 1/16 (the
    image embedding), the hue v decoded from a thresholded hue code max-pooled over each cell."""
    hiera = model.vision_encoder.backbone
    dim0 = STAGE_DIMS[0]
    eps = hiera.blocks[0].layer_norm2.eps
    # Patch embedding (7x7, stride 4, padding 3): EC = e * chroma of the cell's own 4 x 4 pixels
    # (taps 3..6), in 0-1 RGB: pixel_values are (x - mean) / std, so raw_j = std_j v_j + mean_j
    # and chroma_k = raw_k - mean_j(raw_j).
    mean, std = np.asarray(image_mean), np.asarray(image_std)
    e = math.sqrt(dim0 * eps) / CHROMA_KNEE  # |e c|^2 / dim0 = eps at the knee
    conv = hiera.patch_embed.projection
    for k in range(3):
        for j in range(3):
            conv.weight[EC[k], j, 3:7, 3:7] = e * ((k == j) - 1 / 3) * std[j] / 16
        conv.bias[EC[k]] = e * (mean[k] - mean.mean())
    # Block 0: x + MLP(LN2(x)). LN2 of [e c, 0, ...] (mean 0) is e c / sqrt(|e c|^2 / dim0 + eps): the
    # hue, its length sqrt(dim0) * gate, gate = |c| / sqrt(|c|^2 + knee^2). The MLP copies it to H
    # (GELU(z + 9) - 9 = z) and writes the code: per direction d_i, relu(d_i . h - sqrt(dim0) * t_i)
    # (a sharp GELU), so a pixel votes for the hue directions it is strongly coloured in; NEG_SUM
    # and +/-K keep the next LayerNorm's mean at 0 and its scale fixed.
    k_ln = _LN_CONSTANT
    sharp = 10.0
    mlp = hiera.blocks[0].mlp
    for c in range(3):
        mlp.proj_in.weight[c, EC[c]] = 1.0
        mlp.proj_in.bias[c] = H_OFFSET
        mlp.proj_out.weight[H[c], c] = 1.0
        mlp.proj_out.bias[H[c]] = -H_OFFSET
    for i in range(N_CODE):
        deg = 360.0 * i / N_CODE
        unit = 3 + i
        mlp.proj_in.weight[unit, EC] = sharp * chroma_direction(deg)
        mlp.proj_in.bias[unit] = -sharp * math.sqrt(dim0) * hue_threshold(deg)
        mlp.proj_out.weight[CODE[i], unit] = 1.0 / sharp
        mlp.proj_out.weight[NEG_SUM, unit] = -1.0 / sharp
    mlp.proj_out.bias[K_POS], mlp.proj_out.bias[K_NEG] = k_ln, -k_ln
    # Blocks 1 and 2 (stage changes): maxpool(proj(LN1(x))), attention and MLP 0. LN1 rescales by
    # sqrt(dim / 2) / K; proj restores the scale, keeps the code, its -sum and +/-K; the 2x2 max pool
    # keeps each direction's strongest vote. (A leftover mean shifts every code channel alike,
    # which the decode below cancels: the directions sum to 0.)
    src_code = CODE
    for stage in (1, 2):
        proj = hiera.blocks[stage].proj  # blocks 1 and 2 open stages 1 and 2
        restore = k_ln / math.sqrt(STAGE_DIMS[stage - 1] / 2)
        for i in range(N_CODE):
            proj.weight[i, src_code[i]] = restore
            proj.weight[N_CODE, src_code[i]] = -restore
        proj.bias[N_CODE + 1], proj.bias[N_CODE + 2] = k_ln, -k_ln
        src_code = list(range(N_CODE))  # stages 1 and 2 keep the code in channels 0-11, -sum in 12
    neck = model.vision_encoder.neck.convs  # [0] stage 3 (off), [1] stage 2, [2] stage 1 (off), [3] stage 0
    # Image embedding (1/16): v = sum_i code_i d_i, the cell's hue (0 on the grey ground).
    for i in range(N_CODE):
        neck[1].weight[IMAGE_HUE_DIMS, i, 0, 0] = chroma_direction(360.0 * i / N_CODE)
    # feat_s0 (1/4): h, through the neck and the decoder's conv_s0.
    for c in range(3):
        neck[3].weight[c, H[c], 0, 0] = 1.0
        model.mask_decoder.conv_s0.weight[c, c, 0, 0] = 1.0


def _hue_decoder(model: torch.nn.Module) -> None:
    """Prompt encoder + mask decoder: every output token reads v under the point; the hypernetworks
    key the masks on it and the IoU head scores its strength."""
    prompt = model.prompt_encoder
    # Six frequencies (three directions at two radii, in (2p - 1) units), ten zero.
    freqs = torch.zeros(2, 16)
    for n, (radius, angle) in enumerate((r, a) for r in (0.31, 0.47) for a in (0.0, 60.0, 120.0)):
        freqs[:, n] = radius * torch.tensor([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    model.shared_image_embedding.positional_embedding.copy_(freqs)
    prompt.shared_embedding.positional_embedding.copy_(freqs)
    prompt.point_embed.weight[1, MARKER] = 1.0  # a foreground point; every other token embedding is 0
    decoder = model.mask_decoder
    first = decoder.transformer.layers[0]
    # Layer 0 self-attention (it replaces the queries): every token attends to the point token
    # (a query bias times the marker) and takes its PE, stored as [PE, -PE] (mean 0, fixed norm).
    attn = first.self_attn
    attn.q_proj.bias[0] = 400.0
    attn.k_proj.weight[0, MARKER] = 1.0
    for n, d in enumerate(POS_DIMS):
        attn.v_proj.weight[n, d] = 1.0
        attn.o_proj.weight[d, n] = 1.0
        attn.o_proj.weight[NEG_POS_DIMS[n], n] = -1.0
    # Layer 0 token-to-image attention: query PE . key PE, sharpened, picks the cell under the
    # point; its v goes to HUE_DIMS (0.1 v: small next to the PE, so the LayerNorms only rescale).
    cross = first.cross_attn_token_to_image
    for n, d in enumerate(POS_DIMS):
        cross.q_proj.weight[n, d] = 100.0
        cross.k_proj.weight[n, d] = 1.0
    for c in range(3):
        cross.v_proj.weight[c, IMAGE_HUE_DIMS[c]] = 1.0
        cross.o_proj.weight[HUE_DIMS[c], c] = 0.1
        cross.o_proj.weight[NEG_HUE_DIMS[c], c] = -0.1
    # Everything else in the transformer adds 0; each output token ends as [PE, -PE, 0.1 v, -0.1 v].
    # Hypernetworks: key = S * 0.1 v; the 4th output meets the pixels' constant channel and subtracts
    # the threshold, so logit = 0.1 S [v . h(p) - sqrt(24) |v| t(v)] - floor with
    # t = GATE_FAR + GATE_GROUNDWARD * relu(ground . v / |v|): gate(p) cos(hue difference) > t.
    root = math.sqrt(STAGE_DIMS[0])
    for mlp in decoder.output_hypernetworks_mlps:
        _hue_units(mlp)
        for c in range(3):
            mlp.proj_out.weight[c, c], mlp.proj_out.weight[c, 3 + c] = LOGIT_SCALE, -LOGIT_SCALE
        scale = LOGIT_SCALE * root / H_OFFSET
        mlp.proj_out.weight[3, NORM_UNITS] = -scale * GATE_FAR / NORM_SUM
        mlp.proj_out.weight[3, GROUND_UNIT] = -scale * GATE_GROUNDWARD
        mlp.proj_out.bias[3] = -0.5 / H_OFFSET  # a half-logit floor: no mask from a prompt with no hue
    # IoU: 0.73 with no hue (below SAM's 0.8), 0.82 at |v| = 0.05 and rising with |v|, so that of
    # nested masks the purer prompt's comes first in the duplicate filter.
    iou = decoder.iou_prediction_head
    _hue_units(iou)
    iou.proj_out.weight[:, NORM_UNITS] = 10.0 / (0.1 * NORM_SUM)  # logit 10 per unit of |v|
    iou.proj_out.bias.fill_(1.0)
    # Pixel features: upscale_conv2 gives its bias only, + feat_s0 (h); GELU(h + 9) = h + 9.
    decoder.upscale_conv2.bias.fill_(H_OFFSET)


def _hue_units(mlp: torch.nn.Module) -> None:
    """First two layers of a 3-layer ReLU MLP on the token's 0.1 v: units 0-5 relu(+/-v_c),
    NORM_UNITS relu(+/-d_i . v) over N_NORM directions, GROUND_UNIT relu(ground . v); layer 2 copies."""
    w = mlp.proj_in.weight
    for c in range(3):
        w[c, HUE_DIMS[c]], w[3 + c, HUE_DIMS[c]] = 1.0, -1.0
    for i in range(N_NORM):
        d = chroma_direction(180.0 * i / N_NORM)
        w[NORM_UNITS[2 * i], HUE_DIMS] = d
        w[NORM_UNITS[2 * i + 1], HUE_DIMS] = -d
    w[GROUND_UNIT, HUE_DIMS] = chroma_direction(GROUND_HUE_DEG)
    for u in range(GROUND_UNIT + 1):
        mlp.layers[0].weight[u, u] = 1.0


# ---------------------------------------------------------------------------------------------
# The renders these models see

HUE_DEG = {"red": 32.0, "orange": 59.0, "yellow": 83.0, "green": 154.0, "blue": -102.0, "purple": -47.0}
"""Median hue of each world colour after JPEG (black and white have none: the segmenter misses them)."""
MIN_HUE_GAP_DEG = 60.0  # closer hues can merge into one mask (red and orange, 27 degrees; blue and purple, 55)
MIN_OBJECT_PX = 100


def scene_world_config(camera: GroundCamera, root: str | Path, n_test: int) -> WorldConfig:
    """A world seen by `camera` (its pose fixed: what the tiny Depth Pro knows), the ground filling
    the view (pitch below half the field of view: no sky), 2-4 objects 2.5-7 m away and 0.3-0.9 m large."""
    from spatialboost.config import WorldConfig

    fixed = lambda value: (value, value)  # noqa: E731
    return WorldConfig(
        root=str(root), n_train=0, n_test=n_test, objects_per_scene=(2, 4), object_size_m=(0.3, 0.9),
        object_distance_m=(2.5, 7.0), camera_height_m=fixed(camera.height_m), camera_pitch_deg=fixed(camera.pitch_deg),
        camera_roll_deg=fixed(0.0), fov_deg=fixed(camera.fov_deg),
    )  # fmt: skip


def distinct_hue_scene(annotation: dict, instances: np.ndarray) -> bool:
    """Whether the colour-keyed SAM 2 can tell this scene's objects apart: at least two coloured
    objects of MIN_OBJECT_PX visible pixels clear of the border, and no two coloured objects
    (visible or not) within MIN_HUE_GAP_DEG of each other's hue."""
    height, width = instances.shape
    hues, clear = [], 0
    for obj in annotation["objects"]:
        if obj["colour"] not in HUE_DEG:
            continue
        hues.append(HUE_DEG[obj["colour"]])
        ys, xs = np.nonzero(instances == obj["instance_id"])
        if len(ys) >= MIN_OBJECT_PX and ys.min() > 0 and xs.min() > 0 and ys.max() < height - 1 and xs.max() < width - 1:
            clear += 1
    gaps = [abs((a - b + 180.0) % 360.0 - 180.0) for i, a in enumerate(hues) for b in hues[i + 1 :]]
    return clear >= 2 and all(gap >= MIN_HUE_GAP_DEG for gap in gaps)


def scene_jpegs(camera: GroundCamera, root: Path, n: int, max_tries: int | None = None) -> dict[str, bytes]:
    """file name -> JPEG (EXIF focal length) of the first `n` world renders `distinct_hue_scene`
    admits; the renders (with their ground truth) stay under `root`."""
    from spatialboost.data import RGBDDataset
    from spatialboost.world import render_dataset
    from tests.test_real_images import exif_jpeg

    max_tries = max_tries or 6 * n  # about one render in four passes
    render_dataset(scene_world_config(camera, root, max_tries), root, progress=False)
    world = RGBDDataset(root)
    picked = {}
    for image_id in world.ids():
        if distinct_hue_scene(world.annotation(image_id), world.instances(image_id)):
            picked[f"{image_id}.jpg"] = exif_jpeg(world.rgb(image_id), world.row(image_id).fx)
        if len(picked) == n:
            return picked
    raise AssertionError(f"only {len(picked)} of {max_tries} renders have distinct hues; wanted {n}")
