"""Per-sample inference energy of a spiking student or an ANN teacher, one code path for both.

E = e_mac_pj * MACs + e_ac_pj * SOPs (pJ per sample; 4.6 / 0.9 pJ at 45 nm, Horowitz 2014).

What is counted (everything summed over all calls, i.e. all T steps, then divided by the batch):

- Conv (1d/2d/3d, also transposed) and Linear modules, torch.nn or spikingjelly ``layer.*``
  (isinstance + forward hooks). A call whose input is binary (every value 0 or 1) is spike-fed:
  SOPs = synaptic operations actually triggered, exact and padding-aware. Conv: for every output
  position and output channel, the nonzero inputs in its receptive field (a conv of the nonzero
  mask with an all-ones kernel, times out_channels/groups; non-zero padding modes pad the mask the
  same way). Linear: nnz(input) x out_features. Any other call counts dense MACs. A multi-step
  layer sees T*B rows, so T steps are covered either way.
- Matrix products outside those modules (aten mm, addmm, bmm, baddbmm, mv, dot, convolution from
  functional calls, fused scaled-dot-product attention), seen by a TorchDispatchMode and recorded
  as pseudo-layers ``"<enclosing module>:<op><k>"`` (the k-th such op in one call of that module,
  e.g. ``blocks.0.attn:bmm0`` = Q K^T). An operand that is a model parameter/buffer (or a
  view of one) is a weight: the other operand is a layer input, counted as for a Linear (under
  ``paper`` integer counts too). Two activations: only a binary operand is spikes, under either
  convention (an integer K^T V or Q K^T is a sum of products, not spike arrivals): one binary
  operand: SOPs = nnz(spikes) x the other operand's free dimension, whichever side it is on;
  two (spiking Q K^T): SOPs = the number of 1 x 1 products; neither: dense MACs. So
  q @ (k^T @ v) and (q @ k^T) @ v each count their own products' true operations. Fused
  attention always counts MACs (softmax).
- Not counted: BatchNorm (folded into the preceding conv at inference), pooling, residual adds,
  other elementwise ops and neuron membrane updates, as in the Spikformer / BKDSNN estimates.
- ``dense_macs``: MACs per sample for one application (time step). Applications per call: conv:
  rows / B; linear and matmul: T when the rows are a multiple of B*T, else 1.
- ``first_layer_once``: the first Conv/Linear (execution order), when fed a real-valued input,
  counts its real-valued MACs once (divided by its applications: T under direct encoding); a
  first layer fed spikes (event input) leaves every layer x T.
- ``firing_rates``: mean output of every spikingjelly neuron (``BaseNode``) module, over all its
  calls; ``mean_firing_rate`` is weighted by element count (all spikes / all neuron outputs);
  None without neurons (an ANN).

The binary test is on values, so an ANN layer fed an exactly binary tensor (a binarised image)
or, under ``paper``, integer counts (summed event frames) would count SOPs: ``ann=True`` counts
every op as a MAC, and ``measure_with`` sets it for a model without spiking neurons (an ANN
teacher: E = e_mac x MACs).
"""

from bkd_sweep.energy.measure import measure, measure_with

__all__ = ["measure", "measure_with"]
