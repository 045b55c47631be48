"""Objective metrics of generated talking-head frames, no Django.

``image``: PSNR and SSIM (Wang et al. 2004) on batches of frames, as torch tensors, so that training loops
can log them every N iterations without leaving the device.
"""
