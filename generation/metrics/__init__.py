"""Objective metrics of generated talking-head clips, no Django (docs/metrics.md).

``base``: the contract (ClipPair, MetricUnavailable, PerFrame). ``catalog``: every metric, grouped by what must be
loaded to compute it, with versions and queues. ``image``: torch PSNR/SSIM for training loops. ``frame_quality``:
PSNR, SSIM and LPIPS on the whole frame, face and mouth crops (``regions``). ``lmd``, ``ifc``: mouth landmark
distance and inter-frame consistency. ``lse`` + ``mfcc`` + ``syncnet_weights``: LSE-C/LSE-D with syncnet_python's
network, and the AVSyncNet variant. ``fid`` + ``fid_weights``: FID with pytorch-fid's InceptionV3.
"""
