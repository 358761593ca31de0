"""Shared by the Slide tests: weights moved off their initialisation, so that biases and the
learnable shift branch (zero at init) take part in what is compared."""
import torch


def perturbed(attn):
    """Move every trainable parameter off its init by N(0, 0.2²) (in place; returns the module)."""
    with torch.no_grad():
        for p in attn.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    return attn
