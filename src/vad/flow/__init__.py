"""Frozen optical-flow estimators behind one interface: ``flow(a, b) -> (N, 2, H, W)`` in pixels.

Channel 0 is the horizontal (x), channel 1 the vertical (y) displacement of each pixel of ``a`` to its position in
``b``: ``b(x + flow(x)) ≈ a(x)``. Inputs ``(N, 1 or 3, H, W)`` in [-1, 1] (grey or RGB).

May import :mod:`vad.data`, :mod:`vad.nets` and the core; data never imports flow (its flow-target cache takes any
estimator through :class:`vad.data.flows.FlowFunction`).

    src/vad/flow/
      base.py          FlowEstimator, build_flow, no_flow, warp
      flownet2sd.py    FlowNet2SD: NVIDIA's published FlowNet2-SD weights, differentiable   (flow=flownet2sd)
      lucas_kanade.py  LucasKanade: weight-free pyramidal Lucas-Kanade, differentiable    (flow=lk)
      dis.py           DISFlow: OpenCV DIS, not differentiable, for precomputed targets   (flow=dis)
      learned.py       LearnedFlow: a small net trained on the dataset's own frames       (flow=learned)
    conf/flow/none.yaml  no estimator: build_flow("none") and instantiate(cfg.flow) give None

    flow = build_flow("lk")                  # or hydra.utils.instantiate(cfg.flow)
    uv = flow(last_frame, prediction)        # gradients reach both frames when flow.differentiable
"""

from vad.flow.base import FlowEstimator, build_flow, flow_names, no_flow, warp
from vad.flow.dis import DISFlow
from vad.flow.flownet2sd import FlowNet2SD
from vad.flow.lucas_kanade import LucasKanade

__all__ = ["DISFlow", "FlowEstimator", "FlowNet2SD", "LucasKanade", "build_flow", "flow_names", "no_flow", "warp"]
