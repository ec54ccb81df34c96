"""Evaluation of a (boosted) vision encoder: frozen-feature linear probes, spatial VQA scored by
rules, readers of the benchmarks' published formats, demo benchmarks from the world, reports.

Import from the submodules (nothing is imported here, so the package is cheap to import):

    features     frozen features, cached per (encoder fingerprint, dataset); the encoder's view box
    probes       a grid of linear heads in one pass: depth, segmentation, classification
    readers      NYU, KITTI Eigen, ADE20K, VOC 2012, CIFAR-100, class folders, the world -> Sample
    vqa          BLINK Relative_Depth and SpatialRGPT-bench: readers, answer parsing, run_vqa
    demo_bench   both VQA benchmarks generated from held-out world scenes, in their formats
    report       markdown table, bar and depth plots, metrics/evaluate.json structure
"""
