"""Shared test fixtures: tiny real models with VMamba's layer names (no mocks), the real test video."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F


class ChannelFirstLinear(nn.Linear):
    """A Linear stored (out, in) but applied on (B, C, H, W), like VMamba's Linear2d."""

    channel_first = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def _pointwise_factory(layout: str) -> Callable[[int, int], nn.Module]:
    if layout == "channel_last":
        return nn.Linear
    if layout == "linear2d":
        return ChannelFirstLinear
    if layout == "conv1x1":
        return lambda d_in, d_out: nn.Conv2d(d_in, d_out, kernel_size=1)
    raise ValueError(f"unknown layout {layout!r}")


class ToyMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, make: Callable[[int, int], nn.Module]):
        super().__init__()
        self.fc1 = make(dim, hidden)
        self.fc2 = make(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ToyBlock(nn.Module):
    """Residual block whose linears carry VMamba's names: in_proj, out_proj, mlp.fc1, mlp.fc2."""

    def __init__(self, dim: int, make: Callable[[int, int], nn.Module]):
        super().__init__()
        self.in_proj = make(dim, 2 * dim)
        self.out_proj = make(2 * dim, dim)
        self.mlp = ToyMlp(dim, 4 * dim, make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.out_proj(F.silu(self.in_proj(x)))
        return x + self.mlp(x)


class ToyBackbone(nn.Module):
    """`depth` ToyBlocks (names layers.<i>.in_proj ...) plus an un-targeted norm."""

    def __init__(self, layout: str = "channel_last", dim: int = 8, depth: int = 2):
        super().__init__()
        self.layout = layout
        make = _pointwise_factory(layout)
        self.layers = nn.ModuleList(ToyBlock(dim, make) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        if self.layout == "channel_last":
            return self.norm(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def example_input(self, batch: int = 2, h: int = 12, w: int = 11, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        dim = self.norm.normalized_shape[0]
        shape = (batch, h, w, dim) if self.layout == "channel_last" else (batch, dim, h, w)
        return torch.randn(shape, generator=g)


@pytest.fixture
def make_toy() -> Callable[..., ToyBackbone]:
    """Factory of seeded toy backbones: make_toy(layout="channel_last"|"linear2d"|"conv1x1", ...)."""

    def make(layout: str = "channel_last", dim: int = 8, depth: int = 2, seed: int = 0) -> ToyBackbone:
        torch.manual_seed(seed)
        return ToyBackbone(layout, dim, depth)

    return make


@pytest.fixture
def perturb_adapters() -> Callable[[nn.Module, int], None]:
    """Give every adapter parameter of a model random values (so adapters differ from init and per task)."""

    def perturb(model: nn.Module, seed: int = 1, scale: float = 0.2) -> None:
        assert any("adapters." in n for n, _ in model.named_parameters()), "no adapters to perturb"
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("adapters.") or ".adapters." in name:
                    p.copy_(scale * torch.randn(p.shape, generator=g))

    return perturb


@pytest.fixture
def torch_single_thread() -> Iterator[None]:
    """Run a test with one intra-op thread (restored afterwards).

    Tiny tensors gain nothing from threads, and on a busy shared CPU every parallel op waits for a
    descheduled worker (measured: a toy forward 1.2 s with 2 threads vs 0.025 s with 1).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def vtest_path() -> Path:
    """The real pedestrian video (opencv-doc vtest.avi), cached by ./run.sh test; missing = failure."""
    path = Path(os.environ.get("FSLORA_TEST_VIDEO", Path.home() / ".cache" / "fslora" / "vtest.avi"))
    if not path.is_file():
        pytest.fail(f"test video {path} is missing: set FSLORA_TEST_VIDEO or run ./run.sh test once")
    return path


@pytest.fixture(scope="session")
def split_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SynthPS "tiny" split (seed 0) rendered once per run; tests read it, none writes into it."""
    from fslora.data import generate_split

    root = tmp_path_factory.mktemp("synthps-tiny")
    generate_split(root, seed=0, preset="tiny", progress=False)
    return root
