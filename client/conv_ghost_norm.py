"""Ghost norms for 2-D convolutions, registered with Opacus' ghost clipping.

Opacus 1.6 computes per-example gradient *norms* without the gradients only for
linear and embedding layers; for a convolution, ghost clipping first builds each
example's full weight gradient (batch x out x in x k x k floats), which is what
makes DP-SGD on ResNet-18 slow and memory-hungry. The norm needs no gradient:
with ``a_i`` the example's unfolded input (``in*k*k x L`` positions) and ``g_i`` its
output gradient (``out x L``), ``||g_i a_i^T||^2 = sum((a_i^T a_i) * (g_i^T g_i))``,
two ``L x L`` Gram matrices (Li et al., ICLR 2022; Bu et al., ICML 2023). This
module registers that computation through Opacus' own extension point
(``register_norm_sampler``), choosing per layer whichever of the two ways costs
fewer operations (the Gram matrices win where positions are few, deep in the
network). The result is checked against per-example clipping in
``tests/test_ghost_clipping.py``.
"""

from __future__ import annotations

import torch
from opacus.grad_sample.utils import register_norm_sampler
from opacus.utils.tensor_utils import unfold2d
from torch import nn


def _unfolded(layer: nn.Conv2d, activations: torch.Tensor) -> torch.Tensor:
    unfolded: torch.Tensor = unfold2d(
        activations,
        kernel_size=layer.kernel_size,
        padding=layer.padding,
        stride=layer.stride,
        dilation=layer.dilation,
    )
    return unfolded


def _weight_norms(inputs: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Return each example's weight-gradient norm from ``(n, in*k*k, L)`` and ``(n, out, L)``."""
    features, positions = inputs.shape[1], inputs.shape[2]
    outputs = grads.shape[1]
    if positions * positions * (features + outputs) < features * outputs * positions:
        input_gram = torch.einsum("nkl,nkm->nlm", inputs, inputs)
        grad_gram = torch.einsum("nol,nom->nlm", grads, grads)
        squared = (input_gram * grad_gram).sum(dim=(1, 2))
    else:
        per_example = torch.einsum("nol,nkl->nok", grads, inputs)
        squared = per_example.pow(2).sum(dim=(1, 2))
    return torch.sqrt(squared.clamp(min=0))


@register_norm_sampler(nn.Conv2d)  # type: ignore[untyped-decorator]
def conv2d_norm_sample(
    layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Return the per-example gradient norms of a (non-grouped) ``nn.Conv2d``'s parameters."""
    if layer.groups != 1 or isinstance(layer.padding, str):
        # Grouped or string-padded convolutions: Opacus' per-example gradients.
        from opacus.grad_sample.conv import compute_conv_grad_sample

        samples = compute_conv_grad_sample(layer, activations, backprops)
        return {p: s.flatten(start_dim=1).norm(2, dim=-1) for p, s in samples.items()}
    batch = backprops.shape[0]
    grads = backprops.reshape(batch, backprops.shape[1], -1)
    norms: dict[torch.Tensor, torch.Tensor] = {}
    if layer.weight.requires_grad:
        inputs = _unfolded(layer, activations[0].to(backprops.dtype))
        norms[layer.weight] = _weight_norms(inputs, grads)
    if layer.bias is not None and layer.bias.requires_grad:
        norms[layer.bias] = grads.sum(dim=-1).norm(2, dim=-1)
    return norms
